"""The loopback engine's simulations of what a real engine reports on its own: a pairing QR code,
an engine failure, delivery receipts, storage and deletion. Every payload is the event's documented
shape (`plugbox.payloads`)."""

from __future__ import annotations

from typing import Any

import pytest

from plugbox import payloads
from plugbox.engines.loopback import LoopbackEngine
from plugbox.errors import EngineError

ALICE = "15550100001@c.us"
Seen = list[tuple[str, str, dict[str, Any]]]


@pytest.fixture
def seen() -> Seen:
    return []


@pytest.fixture
async def engine(seen: Seen) -> LoopbackEngine:
    def record(event: str, session_id: str, data: dict[str, Any]) -> None:
        assert payloads.problem(event, data) is None, (event, data, payloads.problem(event, data))
        seen.append((event, session_id, data))

    eng = LoopbackEngine(clock=lambda: 1_700_000_000.0, on_session_event=record)
    await eng.create_session("s1", start=False)
    return eng


def _names(seen: Seen) -> list[str]:
    return [name for name, _sid, _data in seen]


async def test_pairing_shows_a_qr_code_between_starting_and_ready(engine: LoopbackEngine, seen: Seen) -> None:
    await engine.start_session("s1", pair=True)
    assert _names(seen) == ["session:created", "session:starting", "session:qr", "session:ready"]
    assert seen[2] == ("session:qr", "s1", {"sessionId": "s1"})
    qr = engine.qr_code("s1")
    assert qr is not None and qr.startswith("loopback-qr:s1:")
    assert engine.is_live("s1")


async def test_a_start_without_pairing_shows_no_qr(engine: LoopbackEngine, seen: Seen) -> None:
    await engine.start_session("s1")
    assert "session:qr" not in _names(seen) and engine.qr_code("s1") is None


async def test_a_failed_session_reports_its_reason_and_is_not_live_until_restarted(
    engine: LoopbackEngine, seen: Seen
) -> None:
    await engine.start_session("s1")
    await engine.fail_session("s1", "browser crashed")
    assert seen[-1] == ("session:error", "s1", {"reason": "browser crashed"})
    assert not engine.is_live("s1")
    with pytest.raises(EngineError, match="not live"):
        await engine.send_text("s1", ALICE, "hi")
    await engine.start_session("s1")
    assert engine.is_live("s1") and _names(seen)[-1] == "session:ready"
    with pytest.raises(EngineError, match="reason"):
        await engine.fail_session("s1", "")


async def test_every_stored_message_is_persisted_in_both_directions(engine: LoopbackEngine, seen: Seen) -> None:
    await engine.start_session("s1")
    inbound = await engine.inject_inbound("s1", ALICE, "hello")
    sent = await engine.send_text("s1", ALICE, "hi back")
    replied = await engine.reply("s1", ALICE, inbound["id"], "quoting you")
    persisted = [data for name, _sid, data in seen if name == "message:persisted"]
    assert persisted == [{"sessionId": "s1", "message": m} for m in (inbound, sent, replied)]


async def test_receipts_move_an_outbound_message_sent_delivered_read(engine: LoopbackEngine, seen: Seen) -> None:
    await engine.start_session("s1")
    sent = await engine.send_text("s1", ALICE, "hi")
    assert engine.ack_status("s1", sent["id"]) == "sent"
    await engine.ack("s1", sent["id"])
    await engine.ack("s1", sent["id"], "read")
    acks = [data for name, _sid, data in seen if name == "message:ack"]
    assert acks == [{"messageId": sent["id"], "status": "delivered", "ack": 2},
                    {"messageId": sent["id"], "status": "read", "ack": 3}]
    assert engine.ack_status("s1", sent["id"]) == "read"
    with pytest.raises(EngineError, match="only move forward"):
        await engine.ack("s1", sent["id"], "delivered")
    with pytest.raises(EngineError, match="only move forward"):
        await engine.ack("s1", sent["id"])
    assert len([n for n in _names(seen) if n == "message:ack"]) == 2  # refused receipts fire nothing


async def test_receipts_are_refused_for_inbound_unknown_and_bad_status(engine: LoopbackEngine) -> None:
    await engine.start_session("s1")
    inbound = await engine.inject_inbound("s1", ALICE, "hello")
    sent = await engine.send_text("s1", ALICE, "hi")
    with pytest.raises(EngineError, match="inbound"):
        await engine.ack("s1", inbound["id"])
    with pytest.raises(EngineError, match="not found"):
        await engine.ack("s1", "lb-s1-999")
    with pytest.raises(EngineError, match="must be one of"):
        await engine.ack("s1", sent["id"], "played")


async def test_a_deleted_message_leaves_the_history_and_is_reported(engine: LoopbackEngine, seen: Seen) -> None:
    await engine.start_session("s1")
    first = await engine.inject_inbound("s1", ALICE, "oops")
    kept = await engine.send_text("s1", ALICE, "still here")
    await engine.ack("s1", kept["id"])
    held = engine.memory.bytes
    await engine.delete_message("s1", first["id"])
    assert seen[-1] == ("message:deleted", "s1", {"sessionId": "s1", "message": {"id": first["id"], "chatId": ALICE}})
    assert [m["id"] for m in await engine.get_chat_history("s1", ALICE)] == [kept["id"]]
    assert engine.memory.bytes < held  # the budget is released
    assert engine.ack_status("s1", kept["id"]) == "delivered"
    with pytest.raises(EngineError, match="not found"):
        await engine.delete_message("s1", first["id"])
