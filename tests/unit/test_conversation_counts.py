"""The per-plugin row counts the conversation bounds read (`conversation_counts`, see
`plugbox.storage.conversations`): after every write that adds or removes a conversation row (a
send, the rolling trim, a new or updated handover reference or mapping, a refused write, an
uninstall) each count equals the rows the plugin really holds, a plugin holding none of a kind has
no count row, the bounds refuse exactly at the count, and an older database gets its counts (and the
charge for the new index entries) from its migration.

The storage contract: every test runs once per backend (SQLite and PostgreSQL, see `make_database`
in tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from plugbox.errors import StorageError
from plugbox.storage.conversations import ConversationStore
from plugbox.storage.db import Connection, Database
from plugbox.storage.postgres import PostgresDatabase
from plugbox.storage.quota import WriteBudget, read_usage, row_cost

TABLES = {"messages": "conversation_messages", "handover": "conversation_handover",
          "mappings": "conversation_mappings"}
CHAT = ("main", "15550100001@c.us")


def _store(db: Database, **bounds: int) -> ConversationStore:
    return ConversationStore(db, write_budget=WriteBudget(1 << 40, 1 << 40, 10.0), **bounds)


def _envelope(text: str, conversation: str = "conv-1") -> dict[str, str]:
    return {"conversationId": conversation, "sessionId": CHAT[0], "chatId": CHAT[1], "text": text}


def _mapping(cid: str, external: str) -> dict[str, str]:
    return {"conversationId": cid, "provider": "crm", "externalId": external, "sessionId": CHAT[0], "chatId": CHAT[1]}


def _counts(db: Database) -> dict[tuple[str, str], int]:
    rows = db.read(lambda c: c.execute("SELECT plugin_id, kind, n FROM conversation_counts").fetchall())
    return {(str(p), str(k)): int(n) for p, k, n in rows}


def _real(db: Database) -> dict[tuple[str, str], int]:
    """The rows each plugin really holds of each kind, counted over the tables."""
    real: dict[tuple[str, str], int] = {}
    for kind, table in TABLES.items():
        sql = f"SELECT plugin_id, count(*) FROM {table} GROUP BY plugin_id"
        rows = db.read(lambda c, sql=sql: c.execute(sql).fetchall())
        real.update({(str(p), kind): int(n) for p, n in rows})
    return real


async def test_the_counts_follow_every_write_of_the_conversation_tables(any_db: Database) -> None:
    store = _store(any_db, messages_per_plugin=3, rows_per_plugin=5)
    assert _counts(any_db) == {}
    for n in range(2):
        await store.record_sent("a", _envelope(f"t{n}"), None)
    assert _counts(any_db) == _real(any_db) == {("a", "messages"): 2}
    for n in range(2, 6):  # past the rolling bound: each send drops the oldest, the count stays at 3
        await store.record_sent("a", _envelope(f"t{n}"), None)
    assert _counts(any_db) == _real(any_db) == {("a", "messages"): 3}

    await store.set_handover("a", "conv-1", "human", CHAT)
    await store.set_handover("a", "conv-1", "bot")  # an update: no new row
    await store.set_handover("a", "conv-2", "closed")
    await store.upsert_mapping("a", _mapping("conv-1", "41"))
    await store.upsert_mapping("a", _mapping("conv-1", "42"))  # replaced: no new row
    await store.upsert_mapping("b", _mapping("conv-1", "42"))  # another plugin's namespace
    assert _counts(any_db) == _real(any_db) == {
        ("a", "messages"): 3, ("a", "handover"): 2, ("a", "mappings"): 1, ("b", "mappings"): 1}

    # Refused writes change no count: an external id already mapped, a quota refusal.
    with pytest.raises(StorageError, match="already mapped to conversation 'conv-1'"):
        await store.upsert_mapping("a", _mapping("conv-2", "42"))
    tiny = ConversationStore(any_db, quota_bytes=1, write_budget=store.write_budget)
    with pytest.raises(StorageError, match="storage quota"):
        await tiny.set_handover("c", "conv-1", "bot")
    with pytest.raises(StorageError, match="storage quota"):
        await tiny.record_sent("c", _envelope("t"), None)
    assert _counts(any_db) == _real(any_db)
    assert ("c", "handover") not in _counts(any_db)

    await store.delete_plugin("a")  # uninstalled: its rows and its counts go, the neighbour's stay
    assert _counts(any_db) == _real(any_db) == {("b", "mappings"): 1}


async def test_a_new_row_is_refused_exactly_at_the_bound_and_an_update_is_not(any_db: Database) -> None:
    store = _store(any_db, rows_per_plugin=3)
    for n in range(3):
        await store.upsert_mapping("a", _mapping(f"conv-{n}", f"e{n}"))
        await store.set_handover("a", f"conv-{n}", "bot")
    with pytest.raises(StorageError, match="plugin 'a' already has 3 mappings, the most allowed"):
        await store.upsert_mapping("a", _mapping("conv-3", "e3"))
    with pytest.raises(StorageError, match="plugin 'a' already has 3 handover references, the most allowed"):
        await store.set_handover("a", "conv-3", "bot")
    await store.upsert_mapping("a", _mapping("conv-0", "e9"))  # rows it holds may still change
    await store.set_handover("a", "conv-0", "closed")
    await store.upsert_mapping("b", _mapping("conv-3", "e3"))  # the bound is each plugin's own
    await store.set_handover("b", "conv-3", "bot")
    assert _counts(any_db) == _real(any_db) == {
        ("a", "handover"): 3, ("a", "mappings"): 3, ("b", "handover"): 1, ("b", "mappings"): 1}
    await store.delete_plugin("a")
    await store.upsert_mapping("a", _mapping("conv-3", "e3"))  # room again once its rows are gone
    assert _counts(any_db)[("a", "mappings")] == 1


def _messages_held(c: Connection) -> list[tuple[str, int]]:
    """(plugin, its messages) for every plugin holding some."""
    rows = c.execute("SELECT plugin_id, count(*) FROM conversation_messages GROUP BY plugin_id").fetchall()
    return [(str(p), int(n)) for p, n in rows]


async def test_an_older_database_gets_its_counts_and_index_charge_from_its_migration(
        make_database: Callable[[], Database]) -> None:
    db = make_database()
    store = _store(db, messages_per_plugin=4)
    for n in range(6):
        await store.record_sent("a", _envelope(f"t{n}"), None)
    await store.record_sent("a.longer-plugin-id", _envelope("t"), None)
    await store.set_handover("a", "conv-1", "bot")
    await store.upsert_mapping("b", _mapping("conv-1", "42"))
    usage = {p: db.read(lambda c, p=p: read_usage(c, p)) for p in ("a", "a.longer-plugin-id", "b")}
    counts = _counts(db)
    holders = db.read(lambda c: c.execute("SELECT holders FROM plugin_kv_holders").fetchall())

    def before_the_migration(c: Connection) -> None:
        """The database as migration 0010 left it: no counts, no (plugin, seq) index, and each
        message charged without its entry in that index."""
        for plugin_id, n in _messages_held(c):
            c.execute("UPDATE plugin_kv_usage SET bytes = bytes - ? WHERE plugin_id = ?",
                      (n * row_cost(len(plugin_id) + 8), plugin_id))
        c.execute("DROP TABLE conversation_counts")
        c.execute("DROP INDEX conversation_messages_by_seq")
        c.execute("DELETE FROM schema_migrations WHERE version = 11")

    await db.write(before_the_migration)
    await db.close()
    reopened = make_database()
    assert _counts(reopened) == counts == {("a", "messages"): 4, ("a.longer-plugin-id", "messages"): 1,
                                           ("a", "handover"): 1, ("b", "mappings"): 1}
    assert {p: reopened.read(lambda c, p=p: read_usage(c, p)) for p in usage} == usage
    assert reopened.read(lambda c: c.execute("SELECT holders FROM plugin_kv_holders").fetchall()) == holders == [(3,)]
    # A record stored before the migration is credited, when pushed out, what it is charged now.
    store = _store(reopened, messages_per_plugin=4)
    await store.record_sent("a", _envelope("t9"), None)
    assert reopened.read(lambda c: read_usage(c, "a")) == usage["a"]


async def test_two_hosts_adding_rows_for_one_plugin_keep_its_count_and_bound_exact(
        make_postgres_url: Callable[[], str]) -> None:
    """Several hosts on one PostgreSQL database: the writes of one plugin are serialised across
    hosts, so the count both read is exact and the bound holds to the row."""
    url = make_postgres_url()
    one, two = PostgresDatabase(url), PostgresDatabase(url)
    try:
        stores = [_store(db, rows_per_plugin=30, messages_per_plugin=7) for db in (one, two)]

        async def add(i: int, n: int) -> Any:
            try:
                await stores[i].upsert_mapping("a", _mapping(f"c{i}-{n}", f"e{i}-{n}"))
            except StorageError as exc:
                assert "the most allowed" in str(exc)
            await stores[i].set_handover("a", f"c{n}", "bot")  # both hosts: half are updates
            await stores[i].record_sent("a", _envelope(f"t{i}-{n}"), None)

        await asyncio.gather(*(add(i, n) for i in range(2) for n in range(20)))
        assert _counts(one) == _real(one) == {("a", "mappings"): 30, ("a", "handover"): 20, ("a", "messages"): 7}
    finally:
        await one.close()
        await two.close()
