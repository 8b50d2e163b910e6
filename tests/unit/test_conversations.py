"""ctx.conversations / ctx.handover / ctx.mappings (SPEC §3, permission conversation:send): the
verbs through the capability router, over a real SQLite store and the loopback engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from plugbox.capabilities.messages import MessageService
from plugbox.capabilities.router import CapabilityRouter, Services
from plugbox.engines.loopback import LoopbackEngine
from plugbox.errors import CapabilityError, StorageError
from plugbox.hooks import HookBus, HookResult
from plugbox.permissions import SessionScope
from plugbox.storage.conversations import FOLLOW_EVERY_S, ConversationStore
from plugbox.storage.db import Database
from plugbox.storage.kv import PluginStorage
from plugbox.storage.quota import read_usage
from plugbox.storage.sqlite import SqliteDatabase

CHAT = "15550100001@c.us"


@dataclass
class Caller:
    plugin_id: str = "helpdesk"
    permissions: frozenset[str] = frozenset({"conversation:send"})
    scope: SessionScope = field(default_factory=lambda: SessionScope(["*"], True, ["main"]))


@dataclass
class World:
    router: CapabilityRouter
    engine: LoopbackEngine
    store: ConversationStore
    bus: HookBus


@pytest.fixture
async def world(any_db: Database) -> AsyncIterator[World]:
    db = any_db  # the records' rules hold on both backends
    engine = LoopbackEngine()
    await engine.create_session("main")
    await engine.create_session("other")
    bus = HookBus(budget=lambda _pid: 1.0, may_modify=lambda _pid: True)
    store = ConversationStore(db)
    services = Services(
        engine=engine, messages=MessageService(engine, bus), storage=PluginStorage(db), conversations=store
    )
    yield World(CapabilityRouter(services, timeout=5.0, send_factor=4), engine, store, bus)
    await db.close()


def envelope(**over: Any) -> dict[str, Any]:
    env = {"conversationId": "conv-1", "sessionId": "main", "chatId": CHAT, "text": "hello from support"}
    env.update(over)
    return env


def mapping(**over: Any) -> dict[str, Any]:
    doc = {"conversationId": "conv-1", "provider": "chatwoot", "externalId": "42", "sessionId": "main", "chatId": CHAT}
    doc.update(over)
    return doc


# -- conversations.send ------------------------------------------------------------------------------


async def test_send_delivers_through_the_message_service_and_records_it(world: World) -> None:
    result = await world.router.invoke(Caller(), "conversations.send", {"envelope": envelope(provider="chatwoot")})
    assert [m["body"] for m in world.engine.sent] == ["hello from support"]
    assert result["conversationId"] == "conv-1"
    assert result["message"]["id"] == world.engine.sent[0]["id"]
    [row] = world.store.messages("helpdesk", "conv-1")
    expected = ("hello from support", result["message"]["id"], "chatwoot")
    assert (row["text"], row["messageId"], row["provider"]) == expected


async def test_send_runs_message_sending_hooks_which_may_veto(world: World) -> None:
    world.bus.register("guard", "message:sending", lambda ctx: HookResult(data=ctx.data, stop=True), 100)
    with pytest.raises(CapabilityError, match=r"conversations\.send: .*vetoed by plugin 'guard'"):
        await world.router.invoke(Caller(), "conversations.send", {"envelope": envelope()})
    assert world.engine.sent == []
    assert world.store.messages("helpdesk", "conv-1") == []


async def test_send_to_a_session_the_plugin_is_not_active_on_is_refused(world: World) -> None:
    with pytest.raises(CapabilityError, match="not active on session 'other'"):
        await world.router.invoke(Caller(), "conversations.send", {"envelope": envelope(sessionId="other")})
    assert world.engine.sent == []


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (envelope(chatId=""), "envelope.chatId"),
        (envelope(text=""), "envelope.text"),
        (envelope(text="x" * 65537), "envelope.text"),
        (envelope(conversationId=7), "envelope.conversationId"),
        (envelope(sessionId="a\nb"), "envelope.sessionId"),
        (envelope(surprise=True), "surprise"),
        ({"text": "x"}, "envelope"),
    ],
)
async def test_invalid_envelope_is_refused_naming_the_field(world: World, env: dict[str, Any], named: str) -> None:
    with pytest.raises(CapabilityError, match="invalid argument") as caught:
        await world.router.invoke(Caller(), "conversations.send", {"envelope": env})
    assert named in str(caught.value)
    assert world.engine.sent == []


async def test_conversation_verbs_need_conversation_send(world: World) -> None:
    caller = Caller(permissions=frozenset({"messages:send"}))
    with pytest.raises(CapabilityError, match="'conversation:send'"):
        await world.router.invoke(caller, "conversations.send", {"envelope": envelope()})


async def test_message_log_keeps_the_newest_rows_per_plugin(world: World) -> None:
    store = ConversationStore(world.store._db, messages_per_plugin=3)
    for n in range(5):
        await store.record_sent("helpdesk", envelope(text=f"t{n}"), None)
    assert [m["text"] for m in store.messages("helpdesk", "conv-1")] == ["t2", "t3", "t4"]


async def test_a_neighbours_messages_never_push_out_a_plugins_own(world: World) -> None:
    """The bound counts the plugin's own rows: the sequence is shared by every plugin, and another
    plugin's sends must not cost this one its records; what each holds is charged to it alone."""
    store = ConversationStore(world.store._db, messages_per_plugin=3)
    await store.record_sent("alpha", envelope(text="a0"), None)
    for n in range(5):
        await store.record_sent("bravo", envelope(text=f"b{n}"), None)
    await store.record_sent("alpha", envelope(text="a1"), None)
    assert [m["text"] for m in store.messages("alpha", "conv-1")] == ["a0", "a1"]
    assert [m["text"] for m in store.messages("bravo", "conv-1")] == ["b2", "b3", "b4"]
    used = {p: world.store._db.read(lambda c, p=p: read_usage(c, p)) for p in ("alpha", "bravo")}
    assert used["alpha"] * 3 == used["bravo"] * 2, used  # 2 and 3 records of one size: dropped ones credited


# -- handover ----------------------------------------------------------------------------------------


async def test_handover_set_returns_the_previous_state(world: World) -> None:
    first = await world.router.invoke(Caller(), "handover.set", {"ref": "conv-1", "state": "human"})
    second = await world.router.invoke(Caller(), "handover.set", {"ref": "conv-1", "state": "closed"})
    assert (first["state"], first["previous"]) == ("human", None)
    assert (second["state"], second["previous"]) == ("closed", "human")
    assert world.store.get_handover("helpdesk", "conv-1") == "closed"


@pytest.mark.parametrize("state", ["agent", "BOT", "", None])
async def test_handover_state_outside_bot_human_closed_is_refused(world: World, state: Any) -> None:
    with pytest.raises(CapabilityError, match="invalid argument: 'state'"):
        await world.router.invoke(Caller(), "handover.set", {"ref": "conv-1", "state": state})
    assert world.store.get_handover("helpdesk", "conv-1") is None


# -- mappings ----------------------------------------------------------------------------------------


async def test_mapping_round_trip_by_conversation_and_by_provider(world: World) -> None:
    saved = await world.router.invoke(Caller(), "mappings.upsert", {"mapping": mapping()})
    by_conv = await world.router.invoke(Caller(), "mappings.get", {"conversation_id": "conv-1"})
    by_provider = await world.router.invoke(
        Caller(), "mappings.get_by_provider", {"provider": "chatwoot", "external_id": "42"}
    )
    assert by_conv == by_provider == saved
    assert saved["chatId"] == CHAT and saved["externalId"] == "42"


async def test_mapping_upsert_replaces_the_conversations_mapping(world: World) -> None:
    await world.router.invoke(Caller(), "mappings.upsert", {"mapping": mapping()})
    await world.router.invoke(Caller(), "mappings.upsert", {"mapping": mapping(externalId="43")})
    assert await world.router.invoke(
        Caller(), "mappings.get_by_provider", {"provider": "chatwoot", "external_id": "42"}
    ) is None
    found = await world.router.invoke(Caller(), "mappings.get", {"conversation_id": "conv-1"})
    assert found["externalId"] == "43"


async def test_external_id_already_linked_elsewhere_is_refused(world: World) -> None:
    await world.router.invoke(Caller(), "mappings.upsert", {"mapping": mapping()})
    with pytest.raises(CapabilityError, match="already mapped to conversation 'conv-1'"):
        await world.router.invoke(Caller(), "mappings.upsert", {"mapping": mapping(conversationId="conv-2")})


async def test_unknown_mapping_is_none(world: World) -> None:
    assert await world.router.invoke(Caller(), "mappings.get", {"conversation_id": "nope"}) is None


async def test_mappings_are_per_plugin(world: World) -> None:
    await world.router.invoke(Caller(plugin_id="alice"), "mappings.upsert", {"mapping": mapping()})
    bob = Caller(plugin_id="bob")
    assert await world.router.invoke(bob, "mappings.get", {"conversation_id": "conv-1"}) is None
    by_provider = {"provider": "chatwoot", "external_id": "42"}
    assert await world.router.invoke(bob, "mappings.get_by_provider", by_provider) is None
    await world.router.invoke(bob, "mappings.upsert", {"mapping": mapping()})  # same external id, other namespace


async def test_mapping_on_a_session_out_of_scope_is_refused(world: World) -> None:
    with pytest.raises(CapabilityError, match="session 'other'"):
        await world.router.invoke(Caller(), "mappings.upsert", {"mapping": mapping(sessionId="other")})


@pytest.mark.parametrize("field_name", ["conversationId", "provider", "externalId", "sessionId", "chatId"])
async def test_mapping_needs_every_field(world: World, field_name: str) -> None:
    doc = mapping()
    del doc[field_name]
    with pytest.raises(CapabilityError, match=field_name):
        await world.router.invoke(Caller(), "mappings.upsert", {"mapping": doc})


async def test_delete_plugin_forgets_every_record(world: World) -> None:
    await world.router.invoke(Caller(), "conversations.send", {"envelope": envelope()})
    await world.router.invoke(Caller(), "handover.set", {"ref": "conv-1", "state": "bot"})
    await world.router.invoke(Caller(), "mappings.upsert", {"mapping": mapping()})
    await world.store.delete_plugin("helpdesk")
    assert world.store.messages("helpdesk", "conv-1") == []
    assert world.store.get_handover("helpdesk", "conv-1") is None
    assert world.store.get_mapping("helpdesk", "conv-1") is None


async def test_verbs_without_a_store_are_not_available(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "x.db")
    engine = LoopbackEngine()
    bus = HookBus(budget=lambda _pid: 1.0)
    router = CapabilityRouter(
        Services(engine=engine, messages=MessageService(engine, bus), storage=PluginStorage(db)),
        timeout=1.0,
        send_factor=1,
    )
    with pytest.raises(CapabilityError, match=r"handover\.set: not available"):
        await router.invoke(Caller(), "handover.set", {"ref": "r", "state": "bot"})
    await db.close()


# -- handover gating: which chats a plugin holds ------------------------------------------------------


async def test_handover_human_holds_the_mapped_chat_in_its_canonical_form(world: World) -> None:
    mapping = {"conversationId": "conv-1", "provider": "desk", "externalId": "1", "sessionId": "main",
               "chatId": "+1 555 010 0001"}  # the plugin's own spelling of the chat
    await world.router.invoke(Caller(), "mappings.upsert", {"mapping": mapping})
    record = await world.router.invoke(Caller(), "handover.set", {"ref": "conv-1", "state": "human"})
    assert (record["sessionId"], record["chatId"]) == ("main", "15550100001@c.us")
    assert world.store.human_owners("main", "15550100001@c.us") == {"helpdesk"}


async def test_a_reference_linked_to_no_chat_gates_nothing(world: World) -> None:
    record = await world.router.invoke(Caller(), "handover.set", {"ref": "never-linked", "state": "human"})
    assert (record["sessionId"], record["chatId"]) == (None, None)
    assert world.store.human_owners("main", CHAT) == frozenset()


async def test_a_chat_stays_held_while_any_of_the_plugins_conversations_on_it_is_human(world: World) -> None:
    for ref in ("conv-1", "conv-2"):
        await world.store.set_handover("helpdesk", ref, "human", ("main", CHAT))
    await world.store.set_handover("helpdesk", "conv-1", "closed", ("main", CHAT))
    assert world.store.human_owners("main", CHAT) == {"helpdesk"}
    await world.store.set_handover("helpdesk", "conv-2", "bot", ("main", CHAT))
    assert world.store.human_owners("main", CHAT) == frozenset()


async def test_moving_a_handover_to_another_chat_releases_the_first(world: World) -> None:
    await world.store.set_handover("helpdesk", "conv-1", "human", ("main", CHAT))
    await world.store.set_handover("helpdesk", "conv-1", "human", ("main", "15550100009@c.us"))
    assert world.store.human_owners("main", CHAT) == frozenset()
    assert world.store.human_owners("main", "15550100009@c.us") == {"helpdesk"}


async def test_uninstalling_the_owner_releases_its_chats(world: World) -> None:
    await world.store.set_handover("helpdesk", "conv-1", "human", ("main", CHAT))
    await world.store.delete_plugin("helpdesk")
    assert world.store.human_owners("main", CHAT) == frozenset()


async def test_all_plugins_hold_at_most_the_total_of_chats_in_human_each_within_its_share(world: World) -> None:
    """Per-plugin bounds multiply with the plugins: the host's total is shared, min(bound, total /
    plugins holding chats). A plugin within its share is never refused for what others hold; one
    over it is refused naming the total, and the refusal is its own."""
    store = world.store
    store.human_chats_per_plugin, store.human_chats_total = 10, 12
    chats = [("main", f"155502{i:05d}@c.us") for i in range(40)]
    for i in range(6):
        await store.set_handover("hog-1", f"c{i}", "human", chats[i])  # alone: its share is 10
    for i in range(6):
        await store.set_handover("hog-2", f"c{i}", "human", chats[10 + i])  # two holders: 6 each
    with pytest.raises(StorageError, match=r"'hog-1' already holds 6 chats.*share of handover_human_chats_total "
                                           r"\(12 for the 2 plugins holding chats\)"):
        await store.set_handover("hog-1", "c6", "human", chats[6])
    await store.set_handover("hog-1", "c0", "human", chats[0])  # a chat it holds already: no more memory
    for i in range(4):  # a third plugin within its share (12 / 3) is never refused for the others' 12
        await store.set_handover("victim", f"v{i}", "human", chats[20 + i])
    assert store.human_owners(*chats[23]) == {"victim"}
    with pytest.raises(StorageError, match=r"'victim' already holds 4 chats.*handover_human_chats_total"):
        await store.set_handover("victim", "v4", "human", chats[24])
    held = sum(len(owners) for owners in store._human.values())
    assert held == 16  # 12 before the third plugin came, and its share: never more than that
    await store.delete_plugin("hog-2")  # uninstalled: two holders again, and the shares grow at once
    await store.set_handover("victim", "v4", "human", chats[24])
    await store.set_handover("victim", "v5", "human", chats[25])
    store.follow()  # another host's re-read counts the same
    with pytest.raises(StorageError, match="'victim' already holds 6 chats"):
        await store.set_handover("victim", "v6", "human", chats[26])


async def test_another_hosts_announcements_are_re_read_together_at_most_once_a_period(world: World) -> None:
    """On a shared database each handover write is announced to the other hosts. However many a
    plugin makes, another host re-reads the plugins announced in one read per `FOLLOW_EVERY_S`
    (each is a database round trip on its loop, which no budget pays for), and then sees them."""
    store = world.store
    other = ConversationStore(store._db)  # another host's view of the same database
    reads: list[tuple[str, ...]] = []
    follow = other.follow

    def counted(*plugin_ids: str) -> None:
        reads.append(plugin_ids)
        follow(*plugin_ids)

    other.follow = counted  # type: ignore[method-assign]
    chat = ("main", "15550100009@c.us")
    await store.set_handover("helpdesk", "conv-9", "human", chat)
    for _ in range(100):
        other.changed_elsewhere("helpdesk")
    other.changed_elsewhere("crm")
    assert other.human_owners(*chat) == frozenset() and not reads  # gathered first
    await asyncio.sleep(FOLLOW_EVERY_S + 0.1)
    assert reads == [("crm", "helpdesk")]
    assert other.human_owners(*chat) == {"helpdesk"}
    await store.set_handover("helpdesk", "conv-9", "bot", chat)
    other.changed_elsewhere("helpdesk")  # a later announcement: a batch of its own
    await asyncio.sleep(FOLLOW_EVERY_S + 0.1)
    assert reads == [("crm", "helpdesk"), ("helpdesk",)] and other.human_owners(*chat) == frozenset()
    other.changed_elsewhere("helpdesk")
    other.close()  # the host stops: nothing is read any more
    await asyncio.sleep(FOLLOW_EVERY_S + 0.1)
    assert len(reads) == 2


async def test_a_plugin_holds_at_most_its_bound_of_chats_in_human_and_pays_for_its_own(world: World) -> None:
    """Every host keeps the chats held in `human` in memory: one plugin's holds are bounded, the
    refusal is its own (naming the setting), a neighbour still holds chats, and handing one back
    makes room. A re-read (another host's change) counts the same."""
    store = world.store
    store.human_chats_per_plugin = 3
    chats = [("main", f"1555010000{i}@c.us") for i in range(5)]
    for i, chat in enumerate(chats[:3]):
        await store.set_handover("hog", f"conv-{i}", "human", chat)
    await store.set_handover("hog", "conv-0", "human", chats[0])  # a chat it holds already: no more memory
    with pytest.raises(StorageError, match=r"already holds 3 chats handed to a human.*handover_human_chats_per_plugin"):
        await store.set_handover("hog", "conv-3", "human", chats[3])
    assert store.human_owners(*chats[3]) == frozenset()
    await store.set_handover("helpdesk", "conv-3", "human", chats[3])  # the neighbour is not charged
    assert store.human_owners(*chats[3]) == {"helpdesk"}
    await store.set_handover("hog", "conv-1", "bot", chats[1])  # handed back: room for one more
    await store.set_handover("hog", "conv-4", "human", chats[4])
    store.follow()
    with pytest.raises(StorageError, match="already holds 3 chats"):
        await store.set_handover("hog", "conv-5", "human", chats[1])
    await store.delete_plugin("hog")
    await store.set_handover("hog", "conv-5", "human", chats[1])
