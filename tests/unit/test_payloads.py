"""Hook payloads (SPEC §4): every event has a schema and a byte cap, what the host fires fits them,
and what a handler returns is refused, naming the field, when it does not."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from plugbox import payloads
from plugbox.capabilities.messages import MessageService
from plugbox.engines.loopback import LoopbackEngine
from plugbox.events import EVENTS
from plugbox.hooks import HookBus
from plugbox.sdk import HookContext

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"
PEER = "15550100001"
MESSAGE = {"id": "m1", "chatId": "15550100001@c.us", "from": "15550100001@c.us", "body": "hi", "fromMe": False,
           "timestamp": 1}
SENDING = {"sessionId": "main", "input": {"chatId": "15550100001@c.us", "text": "hi"}, "type": "text"}


def _webhook_before(data: Any) -> dict[str, Any]:
    return {"deliveryId": "d", "subscriptionId": "s", "event": "message:received",
            "payload": {"id": "d", "event": "message:received", "sessionId": "main",
                        "timestamp": "2026-01-01T00:00:00Z", "data": data}}


def test_every_event_has_a_payload_and_a_positive_cap() -> None:
    assert set(payloads.PAYLOADS) == EVENTS
    assert all(spec.cap > 0 for spec in payloads.PAYLOADS.values())


def test_the_docs_event_table_lists_every_event_with_its_cap() -> None:
    rows = {}
    for line in DOCS.read_text().splitlines():
        match = re.match(r"\| `([a-z]+:[a-z]+)` \|.*\| ([0-9]+) KiB \|", line)
        if match:
            rows[match.group(1)] = int(match.group(2)) * 1024
    assert rows == {event: spec.cap for event, spec in payloads.PAYLOADS.items()}


# -- what the host fires fits ------------------------------------------------------------------------


async def test_loopback_messages_in_both_directions_fit_the_message_payload() -> None:
    engine = LoopbackEngine()
    await engine.create_session("main")
    inbound = await engine.inject_inbound("main", PEER, "hello")
    outbound = await engine.reply("main", PEER, inbound["id"], "hi back")
    assert payloads.problem("message:received", inbound) is None
    assert payloads.problem("message:sent", outbound) is None


@pytest.mark.parametrize("quoted", [False, True])
async def test_the_message_service_fires_message_sending_in_openwa_shape(quoted: bool) -> None:
    engine = LoopbackEngine()
    await engine.create_session("main")
    inbound = await engine.inject_inbound("main", PEER, "hello")
    seen: list[Any] = []
    bus = HookBus(budget=lambda _p: 1.0)
    bus.register("observer", "message:sending", lambda hook: seen.append(hook.data))
    await MessageService(engine, bus).send_text("main", PEER, "hi", quoted_id=inbound["id"] if quoted else None)
    (data,) = seen
    assert payloads.problem("message:sending", data) is None
    assert (data["sessionId"], data["type"], data["input"]["text"]) == ("main", "reply" if quoted else "text", "hi")
    assert data["input"].get("quotedMessageId") == (inbound["id"] if quoted else None)


async def test_a_send_the_engine_refuses_fires_message_failed_in_openwa_shape() -> None:
    engine = LoopbackEngine()
    await engine.create_session("main")
    seen: list[HookContext] = []
    bus = HookBus(budget=lambda _p: 1.0)
    bus.register("observer", "message:failed", seen.append)
    with pytest.raises(Exception, match="no group"):
        await MessageService(engine, bus).send_text("main", "nowhere@g.us", "hi")
    (hook,) = seen
    assert payloads.problem("message:failed", hook.data) is None
    assert hook.data["input"] == {"chatId": "nowhere@g.us", "text": "hi"} and "no group" in hook.data["error"]


# -- what a handler returns is refused when it does not fit --------------------------------------------


@pytest.mark.parametrize(
    ("event", "data", "named"),
    [
        ("message:received", {**MESSAGE, "body": 5}, "$.body"),
        ("message:received", {**MESSAGE, "extra": {"deep": [1]}}, "extra"),
        ("message:received", {k: v for k, v in MESSAGE.items() if k != "chatId"}, "chatId"),
        ("message:sending", {**SENDING, "input": {"chatId": "c", "text": None}}, "$.input.text"),
        ("message:sending", {**SENDING, "type": "sticker"}, "$.type"),
        ("message:sending", {**SENDING, "type": "reply"}, "quotedMessageId"),
        ("message:ack", {"messageId": "m1", "status": "read", "ack": 9}, "$.ack"),
        ("session:disconnected", "gone", "object"),
    ],
)
def test_data_of_the_wrong_shape_is_refused_naming_the_field(event: str, data: Any, named: str) -> None:
    problem = payloads.problem(event, data)
    assert problem is not None and named in problem


def test_data_over_the_cap_is_refused_naming_size_and_cap() -> None:
    problem = payloads.problem("message:received", {**MESSAGE, "body": "é" * (300 << 10)})
    assert problem is not None and "cap of message:received" in problem and str(512 << 10) in problem


def test_free_form_webhook_data_is_accepted_up_to_the_depth_limit_and_no_deeper() -> None:
    def nested(depth: int) -> Any:
        value: Any = "leaf"
        for _ in range(depth):
            value = [value]
        return value

    # the envelope itself is two levels deep
    assert payloads.problem("webhook:before", _webhook_before(nested(payloads.MAX_OPEN_DEPTH - 3))) is None
    problem = payloads.problem("webhook:before", _webhook_before(nested(5000)))
    assert problem is not None and "nested deeper" in problem


def test_a_rewrite_may_not_change_what_the_event_is_about() -> None:
    moved = {**SENDING, "sessionId": "other"}
    problem = payloads.problem("message:sending", moved, SENDING)
    assert problem is not None and "'sessionId' may not be changed" in problem
    rewritten = {**SENDING, "input": {"chatId": "15550199999@c.us", "text": "changed"}}
    assert payloads.problem("message:sending", rewritten, SENDING) is None
