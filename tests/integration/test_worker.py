"""The sandbox tier end to end: real confined workers, spawned by the zygote, over the bridge."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from plugbox.host import Host
from plugbox.lifecycle import Status
from plugbox.sdk import Plugin

from .conftest import SESSION, WritePlugin, alive, enable, wait_for

pytestmark = pytest.mark.timeout(60)

MESSAGE = {"id": "m1", "chatId": "c1", "from": "c1", "body": "x", "fromMe": False, "timestamp": 1}

RECORDER = """
from plugbox.sdk import Plugin

class Recorder(Plugin):
    async def on_load(self, ctx):
        await ctx.storage.set("on_load", True)
    async def on_enable(self, ctx):
        await ctx.storage.set("on_enable", True)
    async def on_disable(self, ctx):
        await ctx.storage.set("on_disable", True)
    async def on_config_change(self, ctx, config):
        await ctx.storage.set("config_seen", dict(config))
    def health_check(self):
        return {"healthy": True, "message": "all good"}
"""


async def test_lifecycle_runs_in_a_confined_worker(host: Host, write_plugin: WritePlugin) -> None:
    entry = await enable(host, write_plugin(RECORDER))
    assert entry.status == Status.ENABLED
    worker_pid = entry.runtime.proc.pid
    assert worker_pid != host.zygote.pid and alive(worker_pid)
    assert entry.confinement and all(layer["applied"] for layer in entry.confinement if not layer.get("skipped"))
    assert host.storage.get("p", "on_load") == (True, True)
    assert host.storage.get("p", "on_enable") == (True, True)
    await host.disable("p")
    assert host.storage.get("p", "on_disable") == (True, True)
    assert entry.status == Status.DISABLED
    await wait_for(lambda: not alive(worker_pid))


async def test_missing_module_fails_enable_cleanly(host: Host, write_plugin: WritePlugin) -> None:
    plugin = write_plugin("import does_not_exist_anywhere\n")
    entry = host.manager.get(host.load_plugin(plugin).plugin_id)
    with pytest.raises(Exception, match="ModuleNotFoundError"):
        await host.enable(entry.plugin_id)
    assert entry.status == Status.ERROR
    assert "does_not_exist_anywhere" in (entry.error or "")
    assert entry.runtime is None
    assert all(not regs for regs in host.bus._by_event.values())


async def test_capability_and_hook_round_trip(host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin("""
        from plugbox.sdk import Plugin
        class Echo(Plugin):
            async def on_load(self, ctx):
                ctx.register_hook("message:received", self.on_message)
            async def on_message(self, hook):
                await self.ctx.messages.send_text(hook.session_id, hook.data["chatId"], "echo: " + hook.data["body"])
    """))
    await host.inject_inbound(SESSION, "15550001111@c.us", "hi")
    assert [m["body"] for m in host.engine.sent] == ["echo: hi"]


CRASHER = """
import os
from plugbox.sdk import Plugin

class Crash(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:received", self.crash)

    def crash(self, hook):
        os._exit(1)
"""

REENTRANT = """
from plugbox.sdk import Plugin

class Notifier(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:sending", self.on_sending)

    {handler}

    async def work(self, hook):
        runs = await self.ctx.storage.get("runs", 0)
        await self.ctx.storage.set("runs", runs + 1)
        if hook.data["body"] == "outer":  # sending from here fires message:sending again
            await self.ctx.messages.send_text(hook.session_id, hook.data["chatId"], "inner")
"""


@pytest.mark.parametrize("handler", [
    "async def on_sending(self, hook):\n        await self.work(hook)",
    "def on_sending(self, hook):\n        return self.work(hook)  # a plain function returning a coroutine",
])
async def test_a_handler_that_fires_its_own_event_is_not_re_entered(
    host: Host, write_plugin: WritePlugin, handler: str
) -> None:
    await enable(host, write_plugin(REENTRANT.format(handler=handler)))
    outcome = await host.dispatch("message:sending", {"chatId": "c1", "body": "outer"}, SESSION)
    assert not outcome.errors and not outcome.timed_out
    assert [m["body"] for m in host.engine.sent] == ["inner"]
    assert host.storage.get("p", "runs") == (True, 1)  # the inner send skipped the handler it came from


async def test_hook_data_chains_back_from_the_worker(host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin("""
        from plugbox.sdk import Plugin, HookResult
        class Tagger(Plugin):
            def on_load(self, ctx):
                ctx.register_hook("message:received", self.tag)
            def tag(self, hook):
                return HookResult(data={**hook.data, "body": "tagged"}, stop=True)
    """, permissions=["hooks:modify"]))
    outcome = await host.dispatch("message:received", dict(MESSAGE), SESSION)
    assert outcome.data == {**MESSAGE, "body": "tagged"}
    assert outcome.stopped


@pytest.mark.parametrize("settings_overrides", [{"hook_budget_ms": 300}])
async def test_hanging_async_hook_times_out_and_the_worker_stays(host: Host, write_plugin: WritePlugin) -> None:
    entry = await enable(host, write_plugin("""
        import asyncio
        from plugbox.sdk import Plugin
        class Hang(Plugin):
            def on_load(self, ctx):
                ctx.register_hook("message:received", self.hang)
            async def hang(self, hook):
                await asyncio.sleep(3600)
    """))
    runtime = entry.runtime
    pid = runtime.proc.pid
    outcome = await host.dispatch("message:received", {"id": "m1", "chatId": "c1"}, SESSION)
    assert outcome.timed_out == ["p"] and not outcome.stopped
    assert runtime.liveness_checking  # the timeout started a liveness check ...
    await wait_for(lambda: not runtime.liveness_checking, within=5)  # ... which the idle loop passed
    assert entry.runtime is runtime and runtime.proc.pid == pid and alive(pid)
    assert entry.status == Status.ENABLED
    assert (await host.manager.health("p"))["healthy"] is True  # the same worker still serves
    assert entry.runtime is runtime and runtime.proc.pid == pid


@pytest.mark.parametrize("settings_overrides", [{"hook_budget_ms": 300, "liveness_window_ms": 300}])
async def test_infinite_sync_loop_is_killed_and_the_host_goes_on(host: Host, write_plugin: WritePlugin) -> None:
    entry = await enable(host, write_plugin("""
        import signal
        from plugbox.sdk import Plugin
        class Spin(Plugin):
            def on_load(self, ctx):
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_IGN)
                ctx.register_hook("message:received", self.spin)
            def spin(self, hook):
                while True:
                    pass
    """))
    pid = entry.runtime.proc.pid
    outcome = await host.dispatch("message:received", {"id": "m1", "chatId": "c1"}, SESSION)
    assert outcome.timed_out == ["p"]
    await wait_for(lambda: not alive(pid), within=5)
    await wait_for(lambda: any("liveness ping" in line["message"] for line in entry.logs.recent))
    # One runaway is one failure toward the breaker: the timeout and the kill that ends it are
    # not counted twice.
    assert entry.record.consecutive_failures == 1
    # The host still serves: a message through the bus completes.
    await host.dispatch("session:ready", {}, SESSION)


async def test_disabling_a_worker_that_just_died_skips_its_lifecycle_quietly(
    host: Host, write_plugin: WritePlugin
) -> None:
    entry = await enable(host, write_plugin(CRASHER))
    # The hook resolves (to continue) as soon as the channel closes, before the host has reaped
    # the worker and told the manager: the disable below races that report.
    await host.dispatch("message:received", {"id": "m1", "chatId": "c1"}, SESSION)
    await host.disable("p")
    assert entry.status == Status.DISABLED
    lines = [line for line in entry.logs.recent if "on_disable" in line["message"]]
    # Usually the disable wins the race and skips on_disable, saying why at info level; on a busy
    # machine the death may be reported first, and then there is no worker left to call. Never an
    # error, and never an on_disable sent to a dead worker.
    assert [line["level"] for line in lines] in ([], ["info"]), lines
    if lines:
        assert "skipped" in lines[0]["message"] and "gone" in lines[0]["message"]


@pytest.mark.parametrize("settings_overrides", [{"hook_budget_ms": 5000}])
async def test_crash_mid_call_rejects_pending_requests_at_once(host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin("""
        import os
        from plugbox.sdk import Plugin
        class Crash(Plugin):
            def on_load(self, ctx):
                ctx.register_hook("message:received", self.crash)
            async def crash(self, hook):
                os._exit(9)
    """))
    started = time.monotonic()
    outcome = await host.dispatch("message:received", {"id": "m1", "chatId": "c1"}, SESSION)
    assert time.monotonic() - started < 2, "a crash must not wait for the hook budget"
    assert not outcome.timed_out and not outcome.stopped  # resolved to continue


async def test_plain_data_survives_the_round_trip(host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin("""
        from plugbox.sdk import Plugin, HookResult
        class Keep(Plugin):
            def on_load(self, ctx):
                ctx.register_hook("webhook:before", self.keep)
            async def keep(self, hook):
                await self.ctx.storage.set("seen", hook.data["payload"]["data"])
                back = await self.ctx.storage.get("seen")
                back["ts_is_aware"] = hook.timestamp.tzinfo is not None
                return HookResult(data={**hook.data, "payload": {**hook.data["payload"], "data": back}})
    """, permissions=["storage:use", "hooks:modify"]))
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    plain = {"nested": [1, [2.5, {"b": b"\x00\xff", "n": None}], True], "when": when, "empty": {}}
    # webhook:before's payload.data is the one free-form field of any hook payload
    data = {"deliveryId": "d1", "subscriptionId": "s1", "event": "message:received",
            "payload": {"id": "d1", "event": "message:received", "sessionId": SESSION,
                        "timestamp": "2026-01-02T01:04:05Z", "data": plain}}
    outcome = await host.dispatch("webhook:before", data, SESSION)
    assert not outcome.errors
    back = outcome.data["payload"]["data"]
    assert back["nested"] == plain["nested"]
    assert back["when"] == when and back["when"].tzinfo is not None
    assert back["when"].astimezone(UTC) == when.astimezone(UTC)
    assert back["ts_is_aware"] is True


async def test_non_plain_value_is_refused_at_the_sender_with_its_path(host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin("""
        from plugbox.sdk import Plugin, CapabilityError
        class Bad(Plugin):
            async def on_enable(self, ctx):
                try:
                    await ctx.storage.set("k", {"items": [1, 2, 3, {1, 2}]})
                except CapabilityError as exc:
                    await ctx.storage.set("error", str(exc))
    """))
    found, message = host.storage.get("p", "error")
    assert found and "args.value.items[3]" in message and "set" in message


async def test_calls_over_the_in_flight_limit_are_refused_and_slots_reused(
    host: Host, write_plugin: WritePlugin
) -> None:
    gate = asyncio.Event()

    class Gatekeeper(Plugin):  # a built-in that keeps every send in flight until released
        def on_load(self, ctx):
            ctx.register_hook("message:sending", self.hold)

        async def hold(self, hook):
            await gate.wait()

    # (hooks:modify: it sits in the chain, so each send waits for it; an observer would not hold them)
    host.register_builtin(Gatekeeper, {"id": "gatekeeper", "name": "g", "version": "1", "type": "extension",
                                       "main": "builtin", "permissions": ["hooks:modify"]})
    await host.set_active_sessions("gatekeeper", [SESSION])
    await host.enable("gatekeeper")
    entry = await enable(host, write_plugin("""
        import asyncio
        from plugbox.sdk import Plugin, CapabilityError
        class Flood(Plugin):
            def on_load(self, ctx):
                ctx.register_hook("session:ready", self.flood)
            async def flood(self, hook):
                async def one(i):
                    try:
                        await self.ctx.messages.send_text(hook.session_id, "15550001111@c.us", f"m{i}")
                        return "ok"
                    except CapabilityError as exc:
                        return str(exc)
                results = await asyncio.gather(*(one(i) for i in range(33)))
                await self.ctx.storage.set("results", results)
                await self.ctx.storage.set("after", await one(99))
    """))
    dispatch = asyncio.ensure_future(host.dispatch("session:ready", {}, SESSION))
    await wait_for(lambda: entry.runtime.calls_in_flight == 32)
    assert entry.runtime.refused_calls == 1
    gate.set()
    await dispatch
    results = host.storage.get("p", "results")[1]
    assert results.count("ok") == 32
    assert any("too many capability calls in flight (max 32)" in r for r in results)
    assert host.storage.get("p", "after") == (True, "ok")


@pytest.mark.parametrize("settings_overrides", [{"hook_budget_ms": 200}])
async def test_late_replies_are_dropped(host: Host, write_plugin: WritePlugin) -> None:
    entry = await enable(host, write_plugin("""
        import asyncio
        from plugbox.sdk import Plugin, HookResult
        class Slow(Plugin):
            def on_load(self, ctx):
                ctx.register_hook("message:received", self.slow)
            async def slow(self, hook):
                await asyncio.sleep(0.5)
                return HookResult(data={**hook.data, "body": "late"})
    """, permissions=["hooks:modify"]))
    outcome = await host.dispatch("message:received", dict(MESSAGE), SESSION)
    assert outcome.timed_out == ["p"] and outcome.data == MESSAGE
    await wait_for(lambda: entry.runtime.channel_stats().late_replies == 1)
    assert entry.status == Status.ENABLED


async def test_garbage_frames_are_dropped_and_counted(host: Host, write_plugin: WritePlugin) -> None:
    entry = await enable(host, write_plugin("""
        import os, socket, stat
        from plugbox.sdk import Plugin
        class Garbage(Plugin):
            async def on_enable(self, ctx):
                for fd in range(3, 64):
                    try:
                        if stat.S_ISSOCK(os.fstat(fd).st_mode):
                            os.write(fd, b"\\x00\\x00\\x00\\x05hello" * 3)
                            await ctx.storage.set("wrote_to", fd)
                    except OSError:
                        pass
    """))
    assert host.storage.get("p", "wrote_to")[0], "the attack must have reached the channel"
    assert entry.runtime.channel_stats().bad_frames == 3
    assert entry.status == Status.ENABLED
    assert (await host.health("p"))["healthy"] is True


async def test_config_change_and_health_round_trip(host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin(RECORDER, configSchema={
        "type": "object", "properties": {"greeting": {"type": "string", "default": "hi"}}}))
    await host.set_config("p", {"greeting": "hello"})
    assert host.storage.get("p", "config_seen") == (True, {"greeting": "hello"})
    assert await host.health("p") == {"healthy": True, "message": "all good"}


async def test_memory_bomb_ends_only_the_worker(host: Host, write_plugin: WritePlugin) -> None:
    entry = await enable(host, write_plugin("""
        from plugbox.sdk import Plugin
        class Bomb(Plugin):
            def on_load(self, ctx):
                ctx.register_hook("message:received", self.bomb)
            async def bomb(self, hook):
                await self.ctx.storage.set("started", True)
                hoard = []
                while True:
                    hoard.append(bytearray(16 << 20))
    """))
    outcome = await host.dispatch("message:received", {"id": "m1", "chatId": "c1"}, SESSION)
    assert host.storage.get("p", "started") == (True, True)
    assert outcome.errors and "MemoryError" in outcome.errors[0][1]
    assert not outcome.timed_out
    assert entry.status == Status.ENABLED  # the cap held; the worker survived its own bomb
    await host.inject_inbound(SESSION, "15550001111@c.us", "still serving")


@pytest.mark.parametrize("settings_overrides", [{"breaker_threshold": 3}])
async def test_crashing_plugin_restarts_with_backoff_then_trips_the_breaker(
    host: Host, write_plugin: WritePlugin
) -> None:
    entry = await enable(host, write_plugin(CRASHER))
    pids = set()
    for attempt in range(1, 4):
        await wait_for(lambda: entry.status == Status.ENABLED and entry.runtime is not None)
        pids.add(entry.runtime.proc.pid)
        await host.dispatch("message:received", {"id": "m1", "chatId": "c1"}, SESSION)
        await wait_for(lambda n=attempt: entry.record.consecutive_failures == n)
    await wait_for(lambda: entry.runtime is None)
    assert entry.status == Status.ERROR
    assert "circuit breaker" in entry.error and "exited with code 1" in entry.error
    assert len(pids) == 3  # a fresh worker each time
    await asyncio.sleep(0.5)
    assert entry.status == Status.ERROR and entry.runtime is None  # stays down
    await host.enable("p")  # until the operator re-enables it
    assert entry.status == Status.ENABLED
