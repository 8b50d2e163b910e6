"""Many workers at once, and enables that are cancelled half-way: nothing fails spuriously and
nothing is left behind."""

from __future__ import annotations

import asyncio

import pytest

from plugbox.host import Host
from plugbox.lifecycle import Status

from .conftest import SESSION, WritePlugin, alive, wait_for

pytestmark = pytest.mark.timeout(120)

CODE = """
from plugbox.sdk import Plugin
class P(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("session:ready", self.ready)
    def ready(self, hook):
        return None
"""


async def test_a_burst_of_200_concurrent_enables_all_succeed(host: Host, write_plugin: WritePlugin) -> None:
    ids = [f"p{i}" for i in range(200)]
    for pid in ids:
        host.load_plugin(write_plugin(CODE, id=pid, permissions=[]))
        await host.set_active_sessions(pid, [SESSION])
    results = await asyncio.gather(*(host.enable(pid) for pid in ids), return_exceptions=True)
    failures = [str(r) for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert all(host.manager.get(pid).status == Status.ENABLED for pid in ids)
    outcome = await host.bus.execute("session:ready", {}, SESSION)
    assert outcome.errors == [] and outcome.timed_out == []


async def test_a_cancelled_enable_leaves_no_worker_and_no_hooks(host: Host, write_plugin: WritePlugin) -> None:
    plugin_id = host.load_plugin(write_plugin("""
        import asyncio
        from plugbox.sdk import Plugin
        class Slow(Plugin):
            def on_load(self, ctx):
                ctx.register_hook("session:ready", self.ready)
            async def on_enable(self, ctx):
                await asyncio.sleep(3600)
            def ready(self, hook):
                return None
    """)).plugin_id
    entry = host.manager.get(plugin_id)
    task = asyncio.ensure_future(host.enable(entry.plugin_id))
    await wait_for(lambda: entry.runtime is not None and entry.runtime.proc is not None
                   and bool(host.bus.handlers("session:ready")))
    pid = entry.runtime.proc.pid
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert entry.runtime is None
    assert host.bus.handlers("session:ready") == []
    assert entry.status == Status.ERROR and "cancelled" in (entry.error or "")
    await wait_for(lambda: not alive(pid))
