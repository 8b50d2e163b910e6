"""The hook bus (SPEC §4): order, data chaining, stop, errors, payload checks, vetoes, the re-entry
guard, the handler budget and session scope. The `bus` fixture lets every plugin modify (as if each
held `hooks:modify`); observe-only handlers and the permission are in test_hook_modify.py, the
payload schemas in test_payloads.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from plugbox.capabilities.messages import MessageService
from plugbox.engines.loopback import LoopbackEngine
from plugbox.errors import CapabilityError, SendVetoed
from plugbox.hooks import HookBus
from plugbox.host import Host
from plugbox.sdk import HookContext, HookResult, Plugin

CHAT = "15550100001"
MESSAGE = {"id": "m1", "chatId": "15550100001@c.us", "from": "15550100001@c.us", "body": "hi", "fromMe": False,
           "timestamp": 1}


def _sending(text: str) -> dict[str, Any]:
    return {"sessionId": "main", "input": {"chatId": "15550100001@c.us", "text": text}, "type": "text"}


def _lost(reason: str) -> dict[str, Any]:
    return {"reason": reason}


@pytest.fixture
def bus() -> HookBus:
    return HookBus(budget=lambda _plugin_id: 1.0, may_modify=lambda _plugin_id: True)


def _returning(result: HookResult | None, seen: list[Any] | None = None) -> Callable[[HookContext], Any]:
    def handler(hook: HookContext) -> HookResult | None:
        if seen is not None:
            seen.append(hook.data)
        return result

    return handler


def _manifest(plugin_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": plugin_id, "name": plugin_id, "version": "1.0.0", "type": "extension", "main": "builtin"} | fields


def _hooking(event: str, handler: Callable[[Plugin, HookContext], Any], priority: int = 100) -> type[Plugin]:
    """A built-in plugin class that registers `handler` (called as handler(plugin, hook)) for `event`."""

    class Hooking(Plugin):
        def on_load(self, ctx: Any) -> None:
            ctx.register_hook(event, lambda hook: handler(self, hook), priority)

    return Hooking


async def _enable(host: Host, plugin: Callable[[], Plugin], manifest: dict[str, Any], sessions: list[str]) -> None:
    host.register_builtin(plugin, manifest)
    await host.set_active_sessions(manifest["id"], sessions)
    await host.enable(manifest["id"])


# -- order and chaining ------------------------------------------------------------------------------


async def test_handlers_run_in_ascending_priority(bus: HookBus) -> None:
    order: list[str] = []
    for name, priority in (("late", 300), ("early", 10), ("default", 100)):
        bus.register(name, "session:ready", lambda _h, name=name: order.append(name), priority)
    await bus.execute("session:ready", {})
    assert order == ["early", "default", "late"]


async def test_handlers_with_equal_priority_run_in_registration_order(bus: HookBus) -> None:
    order: list[str] = []
    for name in ("first", "second", "third"):
        bus.register(name, "session:ready", lambda _h, name=name: order.append(name))
    await bus.execute("session:ready", {})
    assert order == ["first", "second", "third"]


async def test_each_handler_sees_the_data_the_previous_one_returned(bus: HookBus) -> None:
    seen: list[Any] = []
    bus.register("a", "message:sending", _returning(HookResult(data=_sending("one")), seen), 1)
    bus.register("b", "message:sending", _returning(HookResult(data=_sending("two")), seen), 2)
    bus.register("c", "message:sending", _returning(None, seen), 3)
    outcome = await bus.execute("message:sending", _sending("zero"))
    assert seen == [_sending("zero"), _sending("one"), _sending("two")]
    assert outcome.data == _sending("two")


async def test_returning_none_continues_with_data_unchanged(bus: HookBus) -> None:
    bus.register("a", "session:ready", _returning(None))
    outcome = await bus.execute("session:ready", {"x": 1})
    assert outcome.data == {"x": 1}
    assert not outcome.stopped


async def test_hook_stop_ends_chain_but_keeps_data(bus: HookBus) -> None:
    later: list[Any] = []
    bus.register("stopper", "session:disconnected", _returning(HookResult(data=_lost("stopper"), stop=True)), 1)
    bus.register("later", "session:disconnected", _returning(None, later), 2)
    outcome = await bus.execute("session:disconnected", _lost("host"))
    assert later == []
    assert outcome.data == _lost("stopper")
    assert outcome.stopped and outcome.stopped_by == "stopper"


async def test_sync_and_async_handlers_both_run(bus: HookBus) -> None:
    async def async_handler(hook: HookContext) -> HookResult:
        await asyncio.sleep(0)
        return HookResult(data=_lost(hook.data["reason"] + " async"))

    bus.register("sync", "session:disconnected", lambda hook: HookResult(data=_lost(hook.data["reason"] + " sync")), 1)
    bus.register("async", "session:disconnected", async_handler, 2)
    outcome = await bus.execute("session:disconnected", _lost("lost"))
    assert outcome.data == _lost("lost sync async")


async def test_handler_context_carries_event_session_source_and_aware_timestamp(bus: HookBus) -> None:
    seen: list[HookContext] = []
    bus.register("a", "session:ready", seen.append)
    await bus.execute("session:ready", {"k": 1}, "main", source="engine")
    (hook,) = seen
    assert (hook.event, hook.data, hook.session_id, hook.source) == ("session:ready", {"k": 1}, "main", "engine")
    assert hook.timestamp.utcoffset() is not None


# -- failures ----------------------------------------------------------------------------------------


async def test_handler_that_raises_is_skipped_and_chain_goes_on(bus: HookBus) -> None:
    def boom(_hook: HookContext) -> None:
        raise RuntimeError("kaput")

    bus.register("bad", "session:disconnected", boom, 1)
    bus.register("good", "session:disconnected", _returning(HookResult(data=_lost("after"))), 2)
    outcome = await bus.execute("session:disconnected", _lost("before"))
    assert outcome.data == _lost("after")
    assert [plugin for plugin, _ in outcome.errors] == ["bad"]
    assert "kaput" in outcome.errors[0][1]


async def test_handler_returning_an_error_is_skipped_and_its_data_discarded(bus: HookBus) -> None:
    later: list[Any] = []
    bus.register("bad", "session:ready", _returning(HookResult(data="poisoned", stop=True, error="nope")), 1)
    bus.register("good", "session:ready", _returning(None, later), 2)
    outcome = await bus.execute("session:ready", "clean")
    assert outcome.data == "clean"
    assert later == ["clean"]  # its stop was discarded with its data
    assert outcome.errors == [("bad", "nope")]


async def test_handler_returning_a_wrong_type_is_treated_as_an_error(bus: HookBus) -> None:
    bus.register("bad", "session:ready", lambda _hook: {"not": "a HookResult"})
    outcome = await bus.execute("session:ready", "clean")
    assert outcome.data == "clean"
    assert [plugin for plugin, _ in outcome.errors] == ["bad"]
    assert "HookResult" in outcome.errors[0][1]


async def test_failing_handler_is_logged_with_the_plugin_id(bus: HookBus, caplog: pytest.LogCaptureFixture) -> None:
    def boom(_hook: HookContext) -> None:
        raise ValueError("kaput")

    bus.register("bad-plugin", "session:ready", boom)
    with caplog.at_level(logging.WARNING, logger="plugbox.hooks"):
        await bus.execute("session:ready", {})
    assert any("bad-plugin" in r.getMessage() and "kaput" in r.getMessage() for r in caplog.records)


async def test_registering_an_unknown_event_is_refused_with_a_warning(
    bus: HookBus, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="plugbox.hooks"):
        accepted = bus.register("p", "message:exploded", _returning(None))
    assert accepted is False
    assert bus.handlers("message:exploded") == []
    assert any("message:exploded" in r.getMessage() for r in caplog.records)


async def test_handler_past_its_budget_is_treated_as_continue_and_reported() -> None:
    bus = HookBus(budget=lambda _plugin_id: 0.01, may_modify=lambda _plugin_id: True)
    never = asyncio.Event()

    async def hangs(_hook: HookContext) -> HookResult:
        await never.wait()
        return HookResult(data="never", stop=True)

    bus.register("slow", "session:disconnected", hangs, 1)
    bus.register("next", "session:disconnected", _returning(HookResult(data=_lost("next ran"))), 2)
    outcome = await bus.execute("session:disconnected", _lost("start"))
    assert outcome.timed_out == ["slow"]
    assert outcome.data == _lost("next ran")
    assert not outcome.stopped


async def test_budget_overrun_calls_the_timeout_callback_with_the_plugin_id() -> None:
    reported: list[str] = []
    bus = HookBus(budget=lambda _plugin_id: 0.01, on_timeout=reported.append)
    never = asyncio.Event()

    async def hangs(_hook: HookContext) -> None:
        await never.wait()

    bus.register("slow", "session:ready", hangs)
    await (await bus.execute("session:ready", {})).settled()  # (it observes: the bus went on without it)
    assert reported == ["slow"]


# -- returned data is checked against the event's payload ---------------------------------------------


@pytest.mark.parametrize("event", ["message:received", "message:sent"])
@pytest.mark.parametrize(
    "returned",
    [
        "a string",
        {**MESSAGE, "id": 2},
        {**MESSAGE, "chatId": None},
        {**MESSAGE, "invented": True},
        {k: v for k, v in MESSAGE.items() if k != "body"},
        [MESSAGE],
    ],
)
async def test_data_of_the_wrong_shape_is_refused_and_charged_to_its_producer(
    bus: HookBus, event: str, returned: Any
) -> None:
    seen: list[Any] = []
    bus.register("p", event, _returning(HookResult(data=returned)), 1)
    bus.register("next", event, _returning(None, seen), 2)
    outcome = await bus.execute(event, dict(MESSAGE))
    assert seen == [MESSAGE] and outcome.data == MESSAGE
    assert [plugin for plugin, _ in outcome.errors] == ["p"]
    assert "returned data refused" in outcome.errors[0][1]


@pytest.mark.parametrize("event", ["message:received", "message:sent"])
async def test_data_of_the_right_shape_replaces_the_payload(bus: HookBus, event: str) -> None:
    changed = {**MESSAGE, "body": "rewritten"}
    bus.register("p", event, _returning(HookResult(data=changed)))
    outcome = await bus.execute(event, dict(MESSAGE))
    assert outcome.data == changed and outcome.errors == []


async def test_data_over_the_event_byte_cap_is_refused(bus: HookBus) -> None:
    bus.register("p", "message:received", _returning(HookResult(data={**MESSAGE, "body": "x" * (600 << 10)})))
    outcome = await bus.execute("message:received", dict(MESSAGE))
    assert outcome.data == MESSAGE
    assert "cap" in outcome.errors[0][1]


async def test_a_rewrite_may_not_move_the_event_to_another_session(bus: HookBus) -> None:
    moved = {**_sending("hello"), "sessionId": "other"}
    bus.register("p", "message:sending", _returning(HookResult(data=moved)))
    outcome = await bus.execute("message:sending", _sending("hello"), "main")
    assert outcome.vetoed and outcome.malformed is not None and "sessionId" in outcome.malformed


async def test_a_handler_whose_data_is_refused_does_not_count_as_a_success() -> None:
    succeeded: list[str] = []
    bus = HookBus(budget=lambda _p: 1.0, may_modify=lambda _p: True, on_success=succeeded.append)
    bus.register("bad", "session:disconnected", _returning(HookResult(data={"reason": 1})), 1)
    bus.register("good", "session:disconnected", _returning(HookResult(data=_lost("fine"))), 2)
    await bus.execute("session:disconnected", _lost("lost"))
    assert succeeded == ["good"]


# -- stop: veto versus notification ------------------------------------------------------------------


async def test_stop_on_message_sending_vetoes(bus: HookBus) -> None:
    bus.register("guard", "message:sending", _returning(HookResult(stop=True)))
    outcome = await bus.execute("message:sending", _sending("x"))
    assert outcome.vetoed is True
    assert outcome.stopped_by == "guard"


async def test_stop_on_a_notification_event_only_stops_later_handlers(bus: HookBus) -> None:
    later: list[Any] = []
    bus.register("stopper", "message:received", _returning(HookResult(stop=True)), 1)
    bus.register("later", "message:received", _returning(None, later), 2)
    outcome = await bus.execute("message:received", dict(MESSAGE))
    assert later == []
    assert outcome.stopped is True
    assert outcome.vetoed is False


async def test_vetoed_send_raises_send_vetoed_and_reaches_no_engine(bus: HookBus) -> None:
    engine = LoopbackEngine()
    await engine.create_session("main")
    bus.register("guard", "message:sending", _returning(HookResult(stop=True)))
    with pytest.raises(SendVetoed, match="guard"):
        await MessageService(engine, bus).send_text("main", CHAT, "hello")
    assert engine.sent == []


async def test_message_sending_handler_can_rewrite_the_text(bus: HookBus) -> None:
    engine = LoopbackEngine()
    await engine.create_session("main")

    def censor(hook: HookContext) -> HookResult:
        return HookResult(data={**hook.data, "input": {**hook.data["input"], "text": "[censored]"}})

    bus.register("censor", "message:sending", censor)
    await MessageService(engine, bus).send_text("main", CHAT, "rude words")
    assert [m["body"] for m in engine.sent] == ["[censored]"]


async def test_vetoed_send_raises_capability_error_in_the_sending_plugin(host: Host) -> None:
    await host.engine.create_session("main")
    senders: list[Plugin] = []

    def make_sender() -> Plugin:
        senders.append(Plugin())
        return senders[-1]

    guard = _hooking("message:sending", lambda _self, _hook: HookResult(stop=True))
    await _enable(host, guard, _manifest("guard", permissions=["hooks:modify"]), ["main"])
    await _enable(host, make_sender, _manifest("sender", permissions=["messages:send"]), ["main"])

    with pytest.raises(CapabilityError, match="vetoed"):
        await senders[0].ctx.messages.send_text("main", CHAT, "hello")
    assert host.engine.sent == []


# -- re-entry ----------------------------------------------------------------------------------------


async def test_handler_that_sends_does_not_reenter_itself_but_others_still_run(host: Host) -> None:
    await host.engine.create_session("main")
    calls: list[str] = []

    async def notify_on_send(self: Plugin, hook: HookContext) -> None:
        calls.append("notifier")
        await self.ctx.messages.send_text("main", CHAT, "a message is being sent")

    def count(_self: Plugin, _hook: HookContext) -> None:
        calls.append("observer")

    notifier = _hooking("message:sending", notify_on_send, priority=1)
    observer = _hooking("message:sending", count, priority=2)
    await _enable(host, notifier, _manifest("notifier", permissions=["messages:send"]), ["main"])
    await _enable(host, observer, _manifest("observer"), ["main"])

    async with asyncio.timeout(2):
        await host.messages.send_text("main", CHAT, "original")
        await host.bus.settled()  # both observe: the send did not wait for them

    # notifier once (outer send); observer for the outer send and for the notifier's own
    assert sorted(calls) == ["notifier", "observer", "observer"]
    assert sorted(m["body"] for m in host.engine.sent) == ["a message is being sent", "original"]


# -- session scope and config ------------------------------------------------------------------------


async def test_session_scoped_plugin_does_not_see_events_of_sessions_it_is_not_active_on(host: Host) -> None:
    seen: list[str | None] = []
    plugin = _hooking("message:received", lambda _self, hook: seen.append(hook.session_id))
    await _enable(host, plugin, _manifest("scoped"), ["a"])

    await host.bus.execute("message:received", dict(MESSAGE), "b")
    await host.bus.execute("message:received", dict(MESSAGE), "a")
    assert seen == ["a"]


async def test_plugin_outside_its_manifest_sessions_does_not_see_their_events(host: Host) -> None:
    seen: list[str | None] = []
    plugin = _hooking("message:received", lambda _self, hook: seen.append(hook.session_id))
    await _enable(host, plugin, _manifest("narrow", sessions=["a"], sessionScoped=False), [])

    await host.bus.execute("message:received", dict(MESSAGE), "b")
    await host.bus.execute("message:received", dict(MESSAGE), "a")
    assert seen == ["a"]


async def test_handler_sees_its_per_session_merged_config(host: Host) -> None:
    seen: dict[str | None, Any] = {}
    plugin = _hooking("message:received", lambda _self, hook: seen.update({hook.session_id: dict(hook.config)}))
    schema = {"type": "object", "properties": {"greeting": {"type": "string"}, "lang": {"type": "string"}}}
    await _enable(host, plugin, _manifest("configured", configSchema=schema), ["a", "b"])
    await host.set_config("configured", {"greeting": "hi", "lang": "en"})
    await host.set_session_config("configured", "b", {"greeting": "yo"})

    await host.bus.execute("message:received", dict(MESSAGE), "a")
    await host.bus.execute("message:received", dict(MESSAGE), "b")
    assert seen == {"a": {"greeting": "hi", "lang": "en"}, "b": {"greeting": "yo", "lang": "en"}}


async def test_disabled_plugin_handlers_no_longer_run(host: Host) -> None:
    seen: list[str] = []
    plugin = _hooking("session:ready", lambda _self, _hook: seen.append("ran"))
    await _enable(host, plugin, _manifest("gone"), ["main"])
    await host.disable("gone")
    await host.bus.execute("session:ready", {})
    assert seen == []


async def test_execute_for_one_plugin_runs_only_that_plugins_handlers() -> None:
    seen: list[str] = []
    bus = HookBus(budget=lambda _pid: 1.0)
    bus.register("a", "ingress:error", lambda ctx: seen.append("a"))
    bus.register("b", "ingress:error", lambda ctx: seen.append("b"))
    await bus.execute("ingress:error", {"error": "boom"}, None, plugin="b")
    assert seen == ["b"]
