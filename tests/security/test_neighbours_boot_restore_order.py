"""A plugin slow to enable must not hold back the boot of the plugins after it.

At boot the host re-enables every plugin the operator had enabled (`PluginManager.restore`). It did
so one plugin after another, each enable awaited before the next began. A plugin may take its whole
lifecycle budget (`lifecycle_budget_ms`, 30 s) for each of start (its import), `on_load` and
`on_enable` and still succeed, so nothing is charged to it: every plugin restored after it started
up to 90 s later, at every boot, and a few such plugins add up (k plugins: k x 90 s). The start
slots (`worker_start_concurrency`) were meant to be what bounds a burst of enables at boot.

Measured before the fix (a plugin whose on_enable takes 6 s, restored first): the victim, restored
after it, was enabled 6.3 s after the boot began, just after the slow one.

Real confined workers: a first host enables both plugins (the operator's choice, stored), a second
host on the same data directory boots and restores them. Asserts: the slow plugin was slow and
still enabled without a failure (nothing to charge it with), and the victim was enabled long before
the slow plugin's on_enable ended.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.lifecycle import Status
from tests.integration.conftest import host_settings, wait_for
from tests.security.conftest import SESSION, WritePlugin

pytestmark = pytest.mark.timeout(120)

SLOW_S = 6.0

SLOW = f"""
import asyncio
from plugbox.sdk import Plugin


class Slow(Plugin):
    async def on_enable(self, ctx):
        await asyncio.sleep({SLOW_S})  # within its lifecycle budget: a success, however slow
"""
QUICK = """
from plugbox.sdk import Plugin


class Quick(Plugin):
    pass
"""


async def _host(tmp_path: Path, **settings: Any) -> Host:
    return Host(host_settings(tmp_path, lifecycle_budget_ms=20000, **settings), engine=LoopbackEngine(),
                bundled=False)


async def _installed(tmp_path: Path, write_plugin: WritePlugin) -> list[Path]:
    """The slow plugin and the victim, enabled by the operator on a first host (stored), that host gone."""
    dirs = [write_plugin(SLOW, id="aaa-slow", permissions=[]), write_plugin(QUICK, id="zzz-victim", permissions=[])]
    first = await _host(tmp_path)
    await first.start(restore=False)
    try:
        for plugin_dir in dirs:
            plugin_id = first.load_plugin(plugin_dir).plugin_id
            await first.set_active_sessions(plugin_id, [SESSION])
            await first.enable(plugin_id)
    finally:
        await first.stop()
    return dirs


async def test_a_plugin_slow_to_enable_does_not_hold_back_the_boot_of_the_others(
        tmp_path: Path, write_plugin: WritePlugin) -> None:
    dirs = await _installed(tmp_path, write_plugin)
    second = await _host(tmp_path)
    for plugin_dir in dirs:  # in this order: the slow plugin is restored first
        second.load_plugin(plugin_dir)
    slow, victim = second.manager.get("aaa-slow"), second.manager.get("zzz-victim")
    enabled_at: dict[str, float] = {}
    began = time.monotonic()

    async def watch() -> None:
        while len(enabled_at) < 2:
            for entry in (slow, victim):
                if entry.status == Status.ENABLED and entry.plugin_id not in enabled_at:
                    enabled_at[entry.plugin_id] = time.monotonic() - began
            await asyncio.sleep(0.02)

    watching = asyncio.create_task(watch())
    try:
        await second.start()
        async with asyncio.timeout(30):
            await watching
    finally:
        watching.cancel()
        await second.stop()
    print(f"\nenabled after the boot began: slow {enabled_at['aaa-slow']:.1f} s, "
          f"victim {enabled_at['zzz-victim']:.1f} s")
    assert enabled_at["aaa-slow"] >= SLOW_S  # the attack ran: it took its time
    assert slow.record.consecutive_failures == 0 and not slow.failures  # and broke no rule
    assert victim.record.consecutive_failures == 0
    # The victim is enabled long before the slow plugin's on_enable ends (about 1 s on its own).
    assert enabled_at["zzz-victim"] < SLOW_S / 2, "the victim's boot waited for the slow plugin's enable"


async def test_the_host_starts_without_waiting_past_its_bound_for_a_plugin_slow_to_enable(
        tmp_path: Path, write_plugin: WritePlugin) -> None:
    """Nor the host itself: its start (then the engine, and `serve`'s API) waits at most
    `boot_restore_wait_ms` for the plugins it re-enables; a slower one comes up in the background."""
    dirs = await _installed(tmp_path, write_plugin)
    second = await _host(tmp_path, boot_restore_wait_ms=1000)
    for plugin_dir in dirs:
        second.load_plugin(plugin_dir)
    slow, victim = second.manager.get("aaa-slow"), second.manager.get("zzz-victim")
    try:
        began = time.monotonic()
        await second.start()
        took = time.monotonic() - began
        print(f"\nstart took {took:.1f} s beside a plugin taking {SLOW_S:g} s to enable")
        assert took < SLOW_S / 2
        assert victim.status == Status.ENABLED
        assert slow.status != Status.ENABLED and second.manager.enabling_ids() == ["aaa-slow"]
        await wait_for(lambda: slow.status == Status.ENABLED, within=30)  # it still comes up, in the background
        assert not slow.failures and slow.record.consecutive_failures == 0
    finally:
        await second.stop()


async def test_a_host_stopped_while_a_plugin_still_enables_in_the_background_stops_it_at_once(
        tmp_path: Path, write_plugin: WritePlugin) -> None:
    dirs = await _installed(tmp_path, write_plugin)
    second = await _host(tmp_path, boot_restore_wait_ms=500)
    for plugin_dir in dirs:
        second.load_plugin(plugin_dir)
    slow = second.manager.get("aaa-slow")
    await second.start()
    assert second.manager.enabling_ids() == ["aaa-slow"]
    began = time.monotonic()
    await second.stop()
    assert time.monotonic() - began < SLOW_S / 2  # its enable was cancelled, not waited for
    assert slow.runtime is None and second.manager.enabling_ids() == []  # its worker is gone
    assert slow.record.enabled  # the operator's choice stands: the next boot restores it again
