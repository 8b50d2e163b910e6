"""`hooks:modify` (SPEC §3, §4): without it a handler observes (its data and stop are ignored, and
it is told so once in its log); with it, it rewrites and halts, each rewrite checked against the
event's payload; on `message:sending` a rewritten input is what is sent and a malformed one refuses
the send."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from plugbox.errors import CapabilityError, SendVetoed
from plugbox.hooks import HookBus
from plugbox.host import Host
from plugbox.sdk import HookContext, HookResult, Plugin

PEER = "15550100001"
BEFORE = {"deliveryId": "d", "subscriptionId": "s", "event": "message:received",
          "payload": {"id": "d", "event": "message:received", "sessionId": "main", "timestamp": "t", "data": {}}}
OTHER = "15550100002"
MESSAGE = {"id": "m1", "chatId": "15550100001@c.us", "from": "15550100001@c.us", "body": "hi", "fromMe": False,
           "timestamp": 1}


def _bus(modifiers: set[str], told: list[tuple[str, str]] | None = None) -> HookBus:
    def relay(plugin_id: str, level: str, context: str, text: str) -> str:
        if told is not None:
            told.append((plugin_id, context + text))
        return text

    return HookBus(budget=lambda _p: 1.0, may_modify=lambda pid: pid in modifiers, relay=relay)


def _builtin(plugin_id: str, event: str, handler: Callable[[HookContext], Any], *, priority: int = 100,
             permissions: tuple[str, ...] = ()) -> tuple[type[Plugin], dict[str, Any]]:
    class Hooking(Plugin):
        def on_load(self, ctx: Any) -> None:
            ctx.register_hook(event, handler, priority)

    manifest = {"id": plugin_id, "name": plugin_id, "version": "1.0.0", "type": "extension", "main": "builtin",
                "permissions": list(permissions)}
    return Hooking, manifest


async def _enable(host: Host, plugin: type[Plugin], manifest: dict[str, Any]) -> Plugin:
    instances: list[Plugin] = []

    def make() -> Plugin:
        instances.append(plugin())
        return instances[-1]

    host.register_builtin(make, manifest)
    await host.set_active_sessions(manifest["id"], ["main"])
    await host.enable(manifest["id"])
    return instances[0]


def _rewrite_input(**changes: Any) -> Callable[[HookContext], HookResult]:
    return lambda hook: HookResult(data={**hook.data, "input": {**hook.data["input"], **changes}})


# -- the bus -------------------------------------------------------------------------------------------


async def test_an_observers_data_and_stop_are_ignored() -> None:
    later: list[Any] = []
    bus = _bus(modifiers=set())
    bus.register("observer", "message:received", lambda _h: HookResult(data={**MESSAGE, "body": "x"}, stop=True), 1)
    bus.register("later", "message:received", lambda hook: later.append(hook.data), 2)
    outcome = await bus.execute("message:received", dict(MESSAGE))
    assert later == [MESSAGE] and outcome.data == MESSAGE
    assert not outcome.stopped and not outcome.errors


async def test_an_observer_is_told_once_whatever_it_returns_afterwards() -> None:
    told: list[tuple[str, str]] = []
    bus = _bus(modifiers=set(), told=told)
    bus.register("observer", "message:received", lambda _h: HookResult(data=dict(MESSAGE)))
    bus.register("observer", "session:disconnected", lambda _h: HookResult(stop=True))
    for _ in range(3):
        await bus.execute("message:received", dict(MESSAGE))
        await bus.execute("session:disconnected", {"reason": "x"})
    assert len(told) == 1
    plugin_id, line = told[0]
    assert plugin_id == "observer" and "hooks:modify" in line and "ignored" in line


async def test_an_observer_returning_nothing_is_never_told() -> None:
    told: list[tuple[str, str]] = []
    bus = _bus(modifiers=set(), told=told)
    bus.register("observer", "message:received", lambda _h: None)
    await bus.execute("message:received", dict(MESSAGE))
    assert told == []


async def test_a_modifier_stopping_a_notification_event_only_stops_later_handlers() -> None:
    later: list[Any] = []
    bus = _bus(modifiers={"stopper"})
    bus.register("stopper", "message:received", lambda _h: HookResult(stop=True), 1)
    bus.register("later", "message:received", later.append, 2)
    outcome = await bus.execute("message:received", dict(MESSAGE))
    assert later == [] and outcome.stopped and not outcome.vetoed


async def test_a_modifier_stopping_webhook_before_cancels_that_delivery() -> None:
    bus = _bus(modifiers={"filter"})
    bus.register("filter", "webhook:before", lambda _h: HookResult(stop=True))
    outcome = await bus.execute("webhook:before", BEFORE, "main")
    assert outcome.vetoed and outcome.stopped_by == "filter"


async def test_a_malformed_rewrite_of_webhook_before_cancels_the_delivery() -> None:
    bus = _bus(modifiers={"filter"})
    bus.register("filter", "webhook:before", lambda hook: HookResult(data={**hook.data, "payload": "redacted"}))
    outcome = await bus.execute("webhook:before", BEFORE, "main")
    assert outcome.vetoed and outcome.malformed is not None and "$.payload" in outcome.malformed
    assert [plugin for plugin, _ in outcome.errors] == ["filter"]


# -- message:sending through the host ------------------------------------------------------------------


@pytest.fixture
async def host(host: Host) -> Host:
    await host.engine.create_session("main")
    await host.engine.inject_inbound("main", PEER, "hello")
    await host.engine.inject_inbound("main", OTHER, "hello")
    return host


async def _sender(host: Host) -> Plugin:
    return await _enable(host, *_builtin("sender", "session:ready", lambda _h: None, permissions=("messages:send",)))


async def test_a_rewritten_input_sends_the_new_text_to_the_new_chat(host: Host) -> None:
    moderator = _rewrite_input(chatId=f"{OTHER}@c.us", text="[moderated]")
    await _enable(host, *_builtin("moderator", "message:sending", moderator, permissions=("hooks:modify",)))
    sender = await _sender(host)
    sent = await sender.ctx.messages.send_text("main", PEER, "rude words")
    assert (sent["chatId"], sent["body"]) == (f"{OTHER}@c.us", "[moderated]")
    assert [(m["chatId"], m["body"]) for m in host.engine.sent] == [(f"{OTHER}@c.us", "[moderated]")]


async def test_a_malformed_input_from_a_modifier_refuses_the_send(host: Host) -> None:
    await _enable(host, *_builtin("moderator", "message:sending", _rewrite_input(text=None),
                                  permissions=("hooks:modify",)))
    sender = await _sender(host)
    with pytest.raises(CapabilityError, match=r"refused: plugin 'moderator' returned malformed .*\$\.input\.text"):
        await sender.ctx.messages.send_text("main", PEER, "rude words")
    assert host.engine.sent == []


async def test_a_malformed_input_from_an_observer_changes_nothing(host: Host) -> None:
    await _enable(host, *_builtin("nosy", "message:sending", _rewrite_input(text=None)))
    sender = await _sender(host)
    await sender.ctx.messages.send_text("main", PEER, "hello")
    assert [m["body"] for m in host.engine.sent] == ["hello"]
    assert any("hooks:modify" in line["message"] for line in host.plugin("nosy").logs)


async def test_a_rewrite_cannot_move_a_send_to_another_session(host: Host) -> None:
    await host.engine.create_session("elsewhere")
    hijack = lambda hook: HookResult(data={**hook.data, "sessionId": "elsewhere"})  # noqa: E731
    await _enable(host, *_builtin("hijacker", "message:sending", hijack, permissions=("hooks:modify",)))
    sender = await _sender(host)
    with pytest.raises(CapabilityError, match="'sessionId' may not be changed"):
        await sender.ctx.messages.send_text("main", PEER, "hello")
    assert host.engine.sent == []


async def test_a_veto_reaches_the_caller_as_send_vetoed(host: Host) -> None:
    await _enable(host, *_builtin("guard", "message:sending", lambda _h: HookResult(stop=True),
                                  permissions=("hooks:modify",)))
    with pytest.raises(SendVetoed, match="vetoed by plugin 'guard'"):
        await host.messages.send_text("main", PEER, "hello")
    assert host.engine.sent == []
