"""A burst of enables is paced by the host's start slots (`worker_start_concurrency`): no more
runtimes start at once than the setting allows, and the time a plugin waits for a slot is not
charged to its lifecycle budget (a thousand plugins enabled at once must not time out in a queue)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugbox.host import Host
from plugbox.runtime import PluginHandle, PluginRuntime, RuntimeDeps, RuntimeFactory
from plugbox.settings import load_settings


@dataclass
class Starts:
    """What the fake runtimes saw: how many were starting at once, at most."""

    start_s: float = 0.0
    gate: asyncio.Event | None = None
    now: int = 0
    peak: int = 0
    started: list[str] = field(default_factory=list)


class SlowStart:
    """A PluginRuntime whose start takes a while (a worker being forked and confined)."""

    confinement = None
    pid = None
    has_search = False

    def __init__(self, plugin_id: str, starts: Starts) -> None:
        self.plugin_id = plugin_id
        self.starts = starts

    async def start(self) -> None:
        s = self.starts
        s.now += 1
        s.peak = max(s.peak, s.now)
        try:
            if s.gate is not None:
                await s.gate.wait()
            await asyncio.sleep(s.start_s)
        finally:
            s.now -= 1
        s.started.append(self.plugin_id)

    async def lifecycle(self, method: str) -> None:
        pass

    async def config_changed(self, config: dict[str, Any]) -> None:
        pass

    async def health(self) -> dict[str, Any]:
        return {"healthy": True, "message": ""}

    async def webhook(self, route: str, request: dict[str, Any]) -> dict[str, Any]:
        return {"status": 404}

    async def search(self, query: dict[str, Any]) -> Any:
        return None

    def hook_timed_out(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def _host(tmp_path: Path, starts: Starts, plugins: int, **settings: Any) -> tuple[Host, list[str]]:
    def factory(_plugin_dir: Path) -> RuntimeFactory:
        def make(plugin: PluginHandle, _deps: RuntimeDeps) -> PluginRuntime:
            return SlowStart(plugin.plugin_id, starts)
        return make

    host = Host(load_settings(environ={}, data_dir=str(tmp_path / "data"), **settings), bundled=False,
                sandbox_factory=factory)
    ids = []
    for i in range(plugins):
        root = tmp_path / "plugins" / f"p{i}"
        root.mkdir(parents=True)
        (root / "manifest.json").write_text(json.dumps(
            {"id": f"p{i}", "name": f"p{i}", "version": "1.0.0", "type": "extension", "main": "main.py"}))
        (root / "main.py").write_text("")
        ids.append(host.load_plugin(root).plugin_id)
    return host, ids


async def test_no_more_runtimes_start_at_once_than_the_start_slots(tmp_path: Path) -> None:
    starts = Starts(gate=asyncio.Event())
    host, ids = _host(tmp_path, starts, plugins=6, worker_start_concurrency=2)
    await host.start()
    try:
        enabling = asyncio.gather(*(host.enable(p) for p in ids))
        for _ in range(20):  # let every enable run as far as it can
            await asyncio.sleep(0)
        assert starts.now == 2  # two started, four wait for a slot
        starts.gate.set()  # type: ignore[union-attr]
        views = await enabling
        assert [v.status for v in views] == ["enabled"] * 6
        assert starts.peak == 2 and sorted(starts.started) == sorted(ids)
    finally:
        await host.stop()


async def test_waiting_for_a_slot_is_not_charged_to_the_lifecycle_budget(tmp_path: Path) -> None:
    # One slot, eight starts of 0.2 s each: the last one waits 1.4 s, past its 1 s budget, then
    # starts well within it. Charged from the enable call, it would have timed out.
    starts = Starts(start_s=0.2)
    host, ids = _host(tmp_path, starts, plugins=8, worker_start_concurrency=1, lifecycle_budget_ms=1000)
    await host.start()
    try:
        views = await asyncio.gather(*(host.enable(p) for p in ids))
        assert [v.status for v in views] == ["enabled"] * 8, [v.error for v in views]
        assert starts.peak == 1
    finally:
        await host.stop()
