"""The loopback engine (SPEC §8): sessions and their events, every engine verb, inbound injection."""

from __future__ import annotations

from typing import Any

import pytest

from plugbox import payloads
from plugbox.engines._memory import MESSAGE_OVERHEAD_BYTES
from plugbox.engines.base import Engine
from plugbox.engines.loopback import LoopbackEngine, canonical_id
from plugbox.errors import EngineError
from plugbox.settings import load_settings

ALICE = "15550100001@c.us"
BOB = "15550100002@c.us"
GROUP = "120363000000000001@g.us"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def engine(clock: FakeClock) -> LoopbackEngine:
    eng = LoopbackEngine(clock=clock)
    await eng.create_session("s1", me="15550000000")
    eng.add_contact("s1", ALICE, "Alice")
    eng.add_contact("s1", "+1 555 010 0002", "Bob", phone="+44 20 7946 0000")
    eng.add_group("s1", GROUP, "Team", [ALICE, BOB], admins=[ALICE])
    return eng


def test_loopback_engine_satisfies_the_engine_protocol() -> None:
    assert isinstance(LoopbackEngine(), Engine)


# -- sessions ----------------------------------------------------------------------------------------


async def test_session_lifecycle_emits_events_in_order() -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []

    async def on_event(name: str, session_id: str, data: dict[str, Any]) -> None:
        events.append((name, session_id, data))

    eng = LoopbackEngine(on_session_event=on_event)
    await eng.create_session("s1")
    await eng.stop_session("s1")
    await eng.start_session("s1")
    await eng.delete_session("s1")
    assert [e[0] for e in events] == [
        "session:created",
        "session:starting",
        "session:ready",
        "session:disconnected",
        "session:starting",
        "session:ready",
        "session:disconnected",
        "session:deleted",
    ]
    assert all(sid == "s1" for _, sid, _data in events)
    assert all(payloads.problem(name, data) is None for name, _sid, data in events)  # the hooks' own shapes
    assert events[0][2]["id"] == "s1" and events[1][2]["sessionId"] == "s1"
    assert events[-2][2]["reason"] == "deleted"


async def test_sync_session_event_callback_is_called_too() -> None:
    names: list[str] = []
    eng = LoopbackEngine(on_session_event=lambda name, sid, data: names.append(name))
    await eng.create_session("s1", start=False)
    assert names == ["session:created"]


async def test_session_created_without_start_is_not_live_until_started() -> None:
    eng = LoopbackEngine()
    await eng.create_session("s1", start=False)
    assert not eng.is_live("s1")
    await eng.start_session("s1")
    assert eng.is_live("s1")


async def test_sessions_lists_status_liveness_and_own_number() -> None:
    eng = LoopbackEngine()
    await eng.create_session("b", start=False)
    await eng.create_session("a", me="+1 555 000 1234")
    assert eng.sessions() == [
        {"id": "a", "status": "ready", "live": True, "me": "15550001234@c.us"},
        {"id": "b", "status": "created", "live": False, "me": "15550000001@c.us"},
    ]


async def test_creating_a_session_twice_or_with_a_bad_id_is_refused() -> None:
    eng = LoopbackEngine()
    await eng.create_session("s1")
    with pytest.raises(EngineError, match="'s1' already exists"):
        await eng.create_session("s1")
    with pytest.raises(EngineError, match="session id"):
        await eng.create_session("bad id/..")


async def test_verbs_on_an_unknown_session_name_it(engine: LoopbackEngine) -> None:
    with pytest.raises(EngineError, match="unknown session 'ghost'"):
        await engine.get_contacts("ghost")


async def test_verbs_on_a_stopped_session_say_it_is_not_live(engine: LoopbackEngine) -> None:
    await engine.stop_session("s1")
    with pytest.raises(EngineError, match="session 's1' is not live"):
        await engine.send_text("s1", ALICE, "hi")


async def test_deleted_session_is_unknown(engine: LoopbackEngine) -> None:
    await engine.delete_session("s1")
    assert not engine.is_live("s1")
    with pytest.raises(EngineError, match="unknown session 's1'"):
        await engine.get_chats("s1")


# -- ids ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("+1 (555) 010-9999", "15550109999@c.us"),
        ("15550109999", "15550109999@c.us"),
        ("15550109999@c.us", "15550109999@c.us"),
        ("15550109999@s.whatsapp.net", "15550109999@c.us"),
        (GROUP, GROUP),
    ],
)
async def test_canonical_chat_id_normalises_numbers_and_keeps_groups(
    engine: LoopbackEngine, raw: str, canonical: str
) -> None:
    assert await engine.canonical_chat_id("s1", raw) == canonical


@pytest.mark.parametrize(
    "garbage", ["", "hello world", "12", "1" * 16, "abc@c.us", "@g.us", "x y@g.us", "١٢٣٤٥٦", "-x", "a\x00"]
)
async def test_canonical_chat_id_refuses_garbage(engine: LoopbackEngine, garbage: str) -> None:
    with pytest.raises(EngineError, match="not a phone number"):
        await engine.canonical_chat_id("s1", garbage)


def test_canonical_id_refuses_non_strings() -> None:
    with pytest.raises(EngineError, match="must be a str, got int"):
        canonical_id(15550109999)


# -- read verbs ---------------------------------------------------------------------------------------


async def test_get_contacts_lists_contacts_by_id(engine: LoopbackEngine) -> None:
    assert await engine.get_contacts("s1") == [
        {"id": ALICE, "name": "Alice", "number": "15550100001", "isGroup": False},
        {"id": BOB, "name": "Bob", "number": "442079460000", "isGroup": False},
    ]


async def test_get_contact_by_id_accepts_any_notation_and_returns_none_when_unknown(
    engine: LoopbackEngine,
) -> None:
    contact = await engine.get_contact_by_id("s1", "+1 555 010 0001")
    assert contact is not None and contact["name"] == "Alice"
    assert await engine.get_contact_by_id("s1", "15559999999") is None


async def test_get_group_info_returns_participants_with_admin_flags(engine: LoopbackEngine) -> None:
    assert await engine.get_group_info("s1", GROUP) == {
        "id": GROUP,
        "name": "Team",
        "participants": [{"id": ALICE, "isAdmin": True}, {"id": BOB, "isAdmin": False}],
    }


async def test_get_group_info_of_an_unknown_group_names_it(engine: LoopbackEngine) -> None:
    with pytest.raises(EngineError, match=r"no group '999@g\.us'"):
        await engine.get_group_info("s1", "999@g.us")


async def test_check_number_exists_for_self_contacts_and_chat_peers_only(engine: LoopbackEngine) -> None:
    assert await engine.check_number_exists("s1", "+1 555 010 0001") is True
    assert await engine.check_number_exists("s1", "15550000000") is True
    assert await engine.check_number_exists("s1", "15559999999") is False
    await engine.inject_inbound("s1", "15559999999", "hi")
    assert await engine.check_number_exists("s1", "15559999999") is True
    assert await engine.check_number_exists("s1", GROUP) is False


async def test_get_chats_lists_groups_and_chats_most_recent_first(
    engine: LoopbackEngine, clock: FakeClock
) -> None:
    clock.now += 10
    await engine.send_text("s1", ALICE, "hi")
    chats = await engine.get_chats("s1")
    assert chats == [
        {"id": ALICE, "name": "Alice", "isGroup": False, "timestamp": 1_700_000_010},
        {"id": GROUP, "name": "Team", "isGroup": True, "timestamp": 0},
    ]


async def test_chat_history_keeps_both_directions_oldest_first(engine: LoopbackEngine) -> None:
    inbound = await engine.inject_inbound("s1", ALICE, "ping")
    outbound = await engine.send_text("s1", ALICE, "pong")
    history = await engine.get_chat_history("s1", "+1 555 010 0001")
    assert [m["id"] for m in history] == [inbound["id"], outbound["id"]]
    assert [m["fromMe"] for m in history] == [False, True]


@pytest.mark.parametrize(("limit", "expected"), [(0, 1), (-5, 1), (3, 3), (500, 100)])
async def test_chat_history_limit_is_clamped_to_1_through_100(
    engine: LoopbackEngine, limit: int, expected: int
) -> None:
    for i in range(120):
        await engine.send_text("s1", ALICE, f"m{i}")
    history = await engine.get_chat_history("s1", ALICE, limit=limit)
    assert len(history) == expected
    assert history[-1]["body"] == "m119"


async def test_chat_history_of_a_chat_without_messages_is_empty(engine: LoopbackEngine) -> None:
    assert await engine.get_chat_history("s1", "15559999999") == []


async def test_returned_messages_are_copies(engine: LoopbackEngine) -> None:
    sent = await engine.send_text("s1", ALICE, "hi")
    sent["body"] = "tampered"
    (stored,) = await engine.get_chat_history("s1", ALICE)
    assert stored["body"] == "hi"


# -- sending -----------------------------------------------------------------------------------------


async def test_send_text_returns_the_message_and_records_it_with_its_session(engine: LoopbackEngine) -> None:
    message = await engine.send_text("s1", "+1 555 010 0001", "hello")
    assert message == {
        "id": message["id"],
        "chatId": ALICE,
        "from": "15550000000@c.us",
        "to": ALICE,
        "body": "hello",
        "fromMe": True,
        "timestamp": 1_700_000_000,
        "quotedId": None,
        "hasMedia": False,
    }
    assert engine.sent == [{**message, "session_id": "s1"}]


async def test_message_ids_are_unique_and_name_the_session(engine: LoopbackEngine) -> None:
    ids = {(await engine.send_text("s1", ALICE, "x"))["id"] for _ in range(5)}
    assert len(ids) == 5
    assert all(i.startswith("lb-s1-") for i in ids)


async def test_send_text_refuses_empty_or_non_str_text(engine: LoopbackEngine) -> None:
    with pytest.raises(EngineError, match="text: must not be empty"):
        await engine.send_text("s1", ALICE, "")
    with pytest.raises(EngineError, match="text: must be a str"):
        await engine.send_text("s1", ALICE, 42)  # type: ignore[arg-type]
    assert engine.sent == []


async def test_send_to_an_unknown_group_is_refused(engine: LoopbackEngine) -> None:
    with pytest.raises(EngineError, match=r"no group '999@g\.us'"):
        await engine.send_text("s1", "999@g.us", "hi")


async def test_reply_quotes_a_message_of_the_chat(engine: LoopbackEngine) -> None:
    inbound = await engine.inject_inbound("s1", ALICE, "question?")
    answer = await engine.reply("s1", ALICE, inbound["id"], "answer")
    assert answer["quotedId"] == inbound["id"]
    assert engine.sent[-1]["quotedId"] == inbound["id"]


async def test_reply_to_an_unknown_quoted_message_is_refused(engine: LoopbackEngine) -> None:
    with pytest.raises(EngineError, match="quoted message 'lb-s1-999': not found"):
        await engine.reply("s1", ALICE, "lb-s1-999", "answer")
    assert engine.sent == []


async def test_reply_cannot_quote_a_message_of_another_chat(engine: LoopbackEngine) -> None:
    other = await engine.inject_inbound("s1", BOB, "hi")
    with pytest.raises(EngineError, match="not found in chat"):
        await engine.reply("s1", ALICE, other["id"], "answer")


# -- inbound -----------------------------------------------------------------------------------------


async def test_inject_inbound_stores_the_message_and_awaits_the_callback(engine: LoopbackEngine) -> None:
    received: list[tuple[str, dict[str, Any]]] = []

    async def on_inbound(session_id: str, message: dict[str, Any]) -> None:
        received.append((session_id, message))

    engine.on_inbound = on_inbound
    message = await engine.inject_inbound("s1", "+1 555 010 0001", "hello")
    assert received == [("s1", message)]
    assert message["from"] == ALICE and message["to"] == "15550000000@c.us"
    assert message["fromMe"] is False
    assert await engine.get_chat_history("s1", ALICE) == [message]
    assert engine.sent == []


async def test_inbound_group_message_needs_a_sender(engine: LoopbackEngine) -> None:
    with pytest.raises(EngineError, match="sender: required"):
        await engine.inject_inbound("s1", GROUP, "hi")
    message = await engine.inject_inbound("s1", GROUP, "hi", sender=BOB)
    assert (message["chatId"], message["from"]) == (GROUP, BOB)


async def test_inbound_on_a_stopped_session_is_refused(engine: LoopbackEngine) -> None:
    await engine.stop_session("s1")
    with pytest.raises(EngineError, match="'s1' is not live"):
        await engine.inject_inbound("s1", ALICE, "hi")


async def test_history_is_bounded_per_chat(clock: FakeClock) -> None:
    eng = LoopbackEngine(clock=clock, history_limit=3, max_sent=2)
    await eng.create_session("s1")
    for i in range(5):
        await eng.send_text("s1", ALICE, f"m{i}")
    assert [m["body"] for m in await eng.get_chat_history("s1", ALICE)] == ["m2", "m3", "m4"]
    assert [m["body"] for m in eng.sent] == ["m3", "m4"]


@pytest.mark.parametrize("test_id", ["c1", "support-desk", "team.room:7"])
async def test_canonical_chat_id_keeps_opaque_test_ids(engine: LoopbackEngine, test_id: str) -> None:
    assert await engine.canonical_chat_id("s1", test_id) == test_id


async def test_history_is_bounded_in_bytes_per_chat_keeping_the_newest(clock: FakeClock) -> None:
    eng = LoopbackEngine(clock=clock, chat_bytes=3 * (MESSAGE_OVERHEAD_BYTES + 1100))
    await eng.create_session("s1")
    for i in range(6):
        await eng.send_text("s1", ALICE, f"{i}" * 1000)
    kept = [m["body"][0] for m in await eng.get_chat_history("s1", ALICE)]
    assert kept == ["3", "4", "5"]
    huge = LoopbackEngine(clock=clock, chat_bytes=10)
    await huge.create_session("s1")
    await huge.send_text("s1", ALICE, "bigger than the whole chat budget")
    assert len(await huge.get_chat_history("s1", ALICE)) == 1  # the newest message always stays


async def test_history_is_bounded_in_total_across_chats_oldest_chat_forgotten(clock: FakeClock) -> None:
    per_message = MESSAGE_OVERHEAD_BYTES + 10_000
    eng = LoopbackEngine(clock=clock, history_bytes=5 * per_message + 100)
    await eng.create_session("s1")
    eng.add_group("s1", GROUP, "Team", [ALICE])
    await eng.send_text("s1", GROUP, "g" * 9_950)
    for i in range(400):  # a flood of large texts, each to a chat of its own
        await eng.send_text("s1", f"c{i}", "x" * 9_950)
    assert eng.memory.bytes <= 5 * per_message + 100
    chats = {c["id"] for c in await eng.get_chats("s1")}
    assert chats == {GROUP, "c395", "c396", "c397", "c398", "c399"}  # the group is kept, emptied
    assert await eng.get_chat_history("s1", GROUP) == []
    assert await eng.get_chat_history("s1", "c0") == []


async def test_chats_per_session_are_bounded_the_least_recently_active_forgotten(clock: FakeClock) -> None:
    eng = LoopbackEngine(clock=clock, max_chats=4)
    await eng.create_session("s1")
    eng.add_group("s1", GROUP, "Team", [ALICE])  # pinned: the operator's, never forgotten
    for chat in ("c1", "c2", "c3"):
        clock.now += 1
        await eng.send_text("s1", chat, "x" * 1000)
    clock.now += 1
    await eng.send_text("s1", "c1", "again")  # c1 is active again: c2 is now the quietest
    held = eng.memory.bytes
    clock.now += 1
    await eng.send_text("s1", "n0", "y")
    assert {c["id"] for c in await eng.get_chats("s1")} == {GROUP, "c1", "c3", "n0"}
    for i in range(1, 100):  # a flood of new chats of the sender's choosing
        clock.now += 1
        await eng.send_text("s1", f"n{i}", "y")
    chats = [c["id"] for c in await eng.get_chats("s1")]
    assert len(chats) == 4 and set(chats) == {GROUP, "n97", "n98", "n99"}
    assert await eng.get_chat_history("s1", "c2") == []
    assert eng.memory.bytes < held  # the forgotten chats' messages are released too


async def test_deleting_a_session_releases_its_history(clock: FakeClock) -> None:
    eng = LoopbackEngine(clock=clock)
    await eng.create_session("s1")
    await eng.create_session("s2")
    await eng.send_text("s1", ALICE, "x" * 5000)
    await eng.send_text("s2", ALICE, "y")
    before = eng.memory.bytes
    await eng.delete_session("s1")
    assert 0 < eng.memory.bytes < before - 5000


async def test_sent_record_is_bounded_in_bytes(clock: FakeClock) -> None:
    eng = LoopbackEngine(clock=clock, sent_bytes=2 * (MESSAGE_OVERHEAD_BYTES + 60_000) + 100)
    await eng.create_session("s1")
    for i in range(5):
        await eng.send_text("s1", f"c{i}", str(i) * 60_000)
    assert [m["chatId"] for m in eng.sent] == ["c3", "c4"]


def test_engine_bounds_come_from_settings() -> None:
    settings = load_settings(environ={"PLUGBOX_LOOPBACK_HISTORY_BYTES": "12345",
                                          "PLUGBOX_LOOPBACK_HISTORY_PER_CHAT": "7",
                                          "PLUGBOX_LOOPBACK_CHATS_PER_SESSION": "9"})
    eng = LoopbackEngine.from_settings(settings)
    assert (eng.memory.total_bytes, eng.memory.per_chat_messages, eng.max_chats) == (12345, 7, 9)
