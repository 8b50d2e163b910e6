"""Test kit for plugin authors: run your plugin exactly as `plugbox serve` would — untrusted,
confined in a worker — against the loopback engine, and look at what it did.

    from plugbox.testing import run_plugin

    async def test_echo_replies():
        async with run_plugin("path/to/plugin") as p:
            await p.inbound("hi")
            assert [m["body"] for m in p.sent] == ["echo: hi"]

Also usable as a pytest fixture: `plugin = plugin_fixture("path/to/plugin")` at module level.
Settings for a test are the embedded defaults (never the `PLUGBOX_*` environment) plus overrides:
`run_plugin(dir, settings={"fetch_exempt_hosts": ["127.0.0.1"]})`, or `make_settings(data_dir, ...)`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from plugbox.engines.loopback import LoopbackEngine
from plugbox.hooks import HookOutcome
from plugbox.host import Host
from plugbox.lifecycle.status import Status
from plugbox.lifecycle.view import PluginView
from plugbox.settings import Settings, load_settings

__all__ = ["PluginHarness", "loopback_host", "make_settings", "plugin_fixture", "run_plugin"]


def make_settings(data_dir: str | Path, **overrides: Any) -> Settings:
    """Settings for a test: the embedded defaults, `data_dir`, and `overrides` (any Settings field, e.g.
    `fetch_exempt_hosts=("127.0.0.1",)` to let a plugin fetch from a local test server; it must still be
    on the plugin's own allowlist). The environment is ignored, so a test runs the same everywhere.
    Raises ConfigError naming every invalid field."""
    return load_settings(environ={}, data_dir=str(data_dir), **overrides)

DEFAULT_CHAT = "15550001111@c.us"


class PluginHarness:
    """A running, confined plugin on a loopback session."""

    def __init__(self, host: Host, plugin_id: str, session: str) -> None:
        self.host = host
        self.engine: LoopbackEngine = host.loopback
        self.plugin_id = plugin_id
        self.session = session

    @property
    def view(self) -> PluginView:
        """The plugin as the host sees it now (a fresh snapshot on each read)."""
        return self.host.plugin(self.plugin_id)

    @property
    def status(self) -> Status:
        return self.view.status

    @property
    def error(self) -> str | None:
        return self.view.error

    @property
    def worker_pid(self) -> int | None:
        """The pid of the plugin's confined worker while it runs."""
        return self.view.worker_pid

    @property
    def sent(self) -> list[dict[str, Any]]:
        """Messages the loopback engine recorded as sent."""
        return list(self.engine.sent)

    @property
    def storage(self) -> dict[str, Any]:
        pid = self.plugin_id
        return {k: self.host.storage.get(pid, k)[1] for k in self.host.storage.list(pid)}

    @property
    def logs(self) -> list[dict[str, Any]]:
        return [dict(line) for line in self.view.logs]

    @property
    def confinement(self) -> list[dict[str, Any]] | None:
        layers = self.view.confinement
        return None if layers is None else [dict(layer) for layer in layers]

    async def inbound(self, body: str, chat_id: str = DEFAULT_CHAT, sender: str | None = None) -> dict[str, Any]:
        """Inject an inbound message; returns it after every `message:received` handler ran (the
        observers too, which the engine does not wait for)."""
        return await self.host.inject_inbound(self.session, chat_id, body, sender)

    async def dispatch(self, event: str, data: Any) -> HookOutcome:
        """Run the event's chain once; returns when every handler has answered (observers too)."""
        return await self.host.dispatch(event, data, self.session, source="test")

    async def set_config(self, config: dict[str, Any]) -> None:
        await self.host.set_config(self.plugin_id, config)


@contextlib.asynccontextmanager
async def run_plugin(
    plugin_dir: str | Path,
    *,
    session: str = "test",
    config: dict[str, Any] | None = None,
    settings: Settings | Mapping[str, Any] | None = None,
    expect_enabled: bool = True,
) -> AsyncIterator[PluginHarness]:
    """Load `plugin_dir` as untrusted, enable it on a loopback session, yield a harness, then stop
    everything (no worker survives the block). `settings`: a Settings used as is, or a mapping of
    overrides for `make_settings` on a temporary data directory."""
    with tempfile.TemporaryDirectory(prefix="plugbox-test-") as tmp:
        if not isinstance(settings, Settings):
            settings = make_settings(tmp, **(settings or {}))
        async with loopback_host(settings, session) as host:
            plugin_id = host.load_plugin(Path(plugin_dir)).plugin_id
            await host.set_active_sessions(plugin_id, [session])
            if config is not None:
                await host.set_config(plugin_id, config)
            try:
                await host.enable(plugin_id)
            except Exception:
                if expect_enabled:
                    raise
            yield PluginHarness(host, plugin_id, session)


@contextlib.asynccontextmanager
async def loopback_host(settings: Settings, session: str) -> AsyncIterator[Host]:
    """A started host on `settings` with no built-ins and the loopback engine, `session` live; stopped
    (and every worker with it) when the block ends. Shared by `run_plugin` and `plugbox dev run`."""
    engine = LoopbackEngine()
    host = Host(settings, engine=engine, bundled=False)
    try:
        await host.start(restore=False)
        await engine.create_session(session)
        yield host
    finally:
        await host.stop()


def plugin_fixture(plugin_dir: str | Path, **kwargs: Any) -> Callable[..., Any]:
    """A pytest fixture running `plugin_dir` for each test (needs pytest-asyncio)."""
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def plugin() -> AsyncIterator[PluginHarness]:
        async with run_plugin(plugin_dir, **kwargs) as harness:
            yield harness

    return plugin
