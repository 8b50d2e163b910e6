"""The message service (SPEC §4): every outbound send runs `message:sending` (which sees the
pending send and may veto it), then `message:sent` with what the engine sent, or `message:failed`
when the engine refuses; every inbound message runs `message:received`. Handlers learn the
session and the source. (Rewrites and `hooks:modify` are specified in test_hook_modify.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from plugbox.capabilities.messages import MessageService, SendLimits
from plugbox.engines.loopback import LoopbackEngine
from plugbox.errors import CapabilityError, EngineError, SendVetoed
from plugbox.hooks import HookBus
from plugbox.sdk import HookContext, HookResult
from plugbox.totals.slots import FairSlots

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


# -- a plugin's send rate and its share of the engine's calls in flight (SendLimits) --


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _HeldEngine(LoopbackEngine):
    """Sends wait until the test lets them go, so they stay in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.sending = 0

    async def send_text(self, session_id: str, chat_id: str, text: str) -> dict[str, Any]:
        self.sending += 1
        await self.go.wait()
        return await super().send_text(session_id, chat_id, text)


def _limits(clock: _Clock, *, per_s: float = 2, burst: float = 2, max_wait_s: float = 0.0,
            total: int = 8, per_plugin: int = 8) -> SendLimits:
    return SendLimits(per_s, burst, max_wait_s, FairSlots(total, per_plugin, ceiling=2 * total), clock)


async def test_a_plugin_past_its_send_rate_is_refused_naming_the_setting_before_any_hook(
        engine: LoopbackEngine, bus: HookBus) -> None:
    seen: list[HookContext] = []
    bus.register("watcher", "message:sending", recording(seen))
    clock = _Clock()
    service = MessageService(engine, bus, limits=_limits(clock))
    await service.send_text("s1", CHAT, "1", caller="flood")
    await service.send_text("s1", CHAT, "2", caller="flood")  # the burst
    with pytest.raises(CapabilityError, match=r"plugin 'flood' is sending faster than "
                                              r"messages_sends_per_s_per_plugin \(2/s, burst 2\)"):
        await service.send_text("s1", CHAT, "3", caller="flood")
    assert len(seen) == 2  # the refused send ran no hook
    assert service.limits is not None and service.limits.rate_refused == {"flood": 1}
    await service.send_text("s1", CHAT, "v", caller="victim")  # its own bucket
    await service.send_text("s1", CHAT, "h")  # the host's sends are not paced
    clock.now += 0.5  # one send's worth refilled
    await service.send_text("s1", CHAT, "4", caller="flood")


async def test_a_send_within_the_wait_bound_waits_for_its_token_then_goes(
        engine: LoopbackEngine, bus: HookBus) -> None:
    clock = _Clock()
    limits = _limits(clock, per_s=1000, burst=1, max_wait_s=1.0)
    service = MessageService(engine, bus, limits=limits)
    await service.send_text("s1", CHAT, "1", caller="p")
    await service.send_text("s1", CHAT, "2", caller="p")  # waits 1 ms of the real loop, then goes
    assert limits.rate_waited == {"p": 1} and not limits.rate_refused


async def test_a_plugins_sends_past_its_engine_slots_wait_and_a_neighbour_still_sends(bus: HookBus) -> None:
    engine = _HeldEngine()
    await engine.create_session("s1")
    limits = _limits(_Clock(), per_s=1000, burst=1000, total=4, per_plugin=2)
    service = MessageService(engine, bus, limits=limits)
    flood = [asyncio.create_task(service.send_text("s1", CHAT, f"f{i}", caller="flood")) for i in range(5)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert engine.sending == 2 and limits.slots.waited["flood"] == 3  # at its own bound
    victim = asyncio.create_task(service.send_text("s1", CHAT, "v", caller="victim"))
    host = asyncio.create_task(service.send_text("s1", CHAT, "h"))
    for _ in range(10):
        await asyncio.sleep(0)
    assert engine.sending == 4  # the victim's and the host's reached the engine beside the flood
    assert limits.slots.held_by("victim") == 1 and "victim" not in limits.slots.waited
    engine.go.set()
    await asyncio.gather(*flood, victim, host)
    assert limits.slots.in_flight == 0
