"""The message service (SPEC §4): every outbound send runs `message:sending` (which sees the
pending send and may veto it), then `message:sent` with what the engine sent, or `message:failed`
when the engine refuses; every inbound message runs `message:received`. Handlers learn the
session and the source. (Rewrites and `hooks:modify` are specified in test_hook_modify.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from plugbox.capabilities.messages import MessageService
from plugbox.engines.loopback import LoopbackEngine
from plugbox.errors import EngineError, SendVetoed
from plugbox.hooks import HookBus
from plugbox.sdk import HookContext, HookResult

CHAT = "15550100001@c.us"


@pytest.fixture
async def engine() -> LoopbackEngine:
    engine = LoopbackEngine()
    await engine.create_session("s1")
    return engine


@pytest.fixture
def bus() -> HookBus:
    return HookBus(budget=lambda _plugin_id: 1.0, may_modify=lambda _plugin_id: True)


def recording(seen: list[HookContext], result: HookResult | None = None) -> Any:
    def handler(hook: HookContext) -> HookResult | None:
        seen.append(hook)
        return result

    return handler


async def test_sending_hook_sees_the_pending_send_its_session_and_source(engine: LoopbackEngine, bus: HookBus) -> None:
    seen: list[HookContext] = []
    bus.register("watcher", "message:sending", recording(seen))
    await MessageService(engine, bus).send_text("s1", CHAT, "hello", caller="echo")
    [hook] = seen
    assert hook.data == {"sessionId": "s1", "input": {"chatId": CHAT, "text": "hello"}, "type": "text"}
    assert (hook.session_id, hook.source) == ("s1", "echo")


async def test_a_send_is_from_the_host_unless_told_otherwise(engine: LoopbackEngine, bus: HookBus) -> None:
    seen: list[HookContext] = []
    bus.register("watcher", "message:sending", recording(seen))
    bus.register("watcher", "message:sent", recording(seen))
    await MessageService(engine, bus).send_text("s1", CHAT, "hello")
    assert [(h.event, h.source) for h in seen] == [("message:sending", "host"), ("message:sent", "host")]


async def test_sent_hook_sees_the_message_the_engine_sent(engine: LoopbackEngine, bus: HookBus) -> None:
    seen: list[HookContext] = []
    bus.register("watcher", "message:sent", recording(seen))
    message = await MessageService(engine, bus).send_text("s1", CHAT, "hello", caller="api")
    [hook] = seen
    assert hook.data == message and message["body"] == "hello"
    assert (hook.session_id, hook.source) == ("s1", "api")
    assert engine.sent[-1]["body"] == "hello"


async def test_a_send_quoting_a_message_is_a_reply_to_it(engine: LoopbackEngine, bus: HookBus) -> None:
    inbound = await engine.inject_inbound("s1", CHAT, "question")
    seen: list[HookContext] = []
    bus.register("watcher", "message:sending", recording(seen))
    message = await MessageService(engine, bus).send_text("s1", CHAT, "answer", quoted_id=inbound["id"])
    assert seen[0].data == {"sessionId": "s1", "type": "reply",
                            "input": {"chatId": CHAT, "text": "answer", "quotedMessageId": inbound["id"]}}
    assert message["quotedId"] == inbound["id"]


async def test_a_vetoed_send_reaches_no_engine_and_names_chat_session_and_plugin(
    engine: LoopbackEngine, bus: HookBus
) -> None:
    sent: list[HookContext] = []
    bus.register("guard", "message:sending", lambda _hook: HookResult(stop=True))
    bus.register("watcher", "message:sent", recording(sent))
    with pytest.raises(SendVetoed, match=rf"^send to chat '{CHAT}' on session 's1' vetoed by plugin 'guard'$"):
        await MessageService(engine, bus).send_text("s1", CHAT, "hello")
    assert engine.sent == [] and sent == []


async def test_an_engine_refusal_runs_the_failed_hook_and_reaches_the_caller(
    engine: LoopbackEngine, bus: HookBus
) -> None:
    failed: list[HookContext] = []
    sent: list[HookContext] = []
    bus.register("watcher", "message:failed", recording(failed))
    bus.register("watcher", "message:sent", recording(sent))
    with pytest.raises(EngineError) as caught:
        await MessageService(engine, bus).send_text("s1", "nobody@g.us", "hello", caller="echo")
    [hook] = failed
    assert hook.data == {"sessionId": "s1", "error": str(caught.value),
                         "input": {"chatId": "nobody@g.us", "text": "hello"}, "type": "text"}
    assert (hook.session_id, hook.source) == ("s1", "echo") and sent == []


async def test_a_received_message_runs_the_received_hook_from_the_engine(engine: LoopbackEngine, bus: HookBus) -> None:
    seen: list[HookContext] = []
    bus.register("watcher", "message:received", recording(seen, HookResult(stop=True)))
    message = {"id": "m1", "chatId": CHAT, "from": CHAT, "body": "hi", "fromMe": False, "timestamp": 1}
    outcome = await MessageService(engine, bus).receive("s1", message)
    [hook] = seen
    assert (hook.event, hook.data, hook.session_id, hook.source) == ("message:received", message, "s1", "engine")
    assert outcome.stopped and outcome.stopped_by == "watcher"


async def test_a_send_whose_own_arguments_do_not_fit_the_payload_is_refused_saying_why(
    engine: LoopbackEngine, bus: HookBus
) -> None:
    with pytest.raises(SendVetoed, match=rf"^send to chat '{CHAT}' on session 's1' refused: .*input\.text"):
        await MessageService(engine, bus).send_text("s1", CHAT, None)  # type: ignore[arg-type]
    assert engine.sent == []
