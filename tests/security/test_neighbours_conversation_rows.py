"""What a plugin sitting at its conversation row bounds costs the database writer (the one every
plugin's writes share) for each write it keeps making.

- A new mapping (`mappings.upsert`) or handover reference (`handover.set`) past
  `conversation_rows_per_plugin` (100,000) is refused inside the write. The check used to count the
  plugin's rows (`SELECT count(*) ... WHERE plugin_id = ?`): a walk of 100,000 index entries per
  refused write, 4.6-6.7 ms of writer time against 0.08-0.8 ms at 10 rows. Each refused write costs
  the plugin one 4 KiB page of its write budget, so ~1,000 a second pass `storage_write_bytes_per_s`:
  one plugin kept the writer busy, charged to nobody for the time.
- A send past `conversation_messages_per_plugin` (10,000) drops the plugin's oldest record. It used
  to count the plugin's records and sort them to pick the oldest: a cost growing with the records
  held, on every send.

The counts are now kept beside the rows in the same transaction (`conversation_counts`) and the
oldest record is found through a (plugin, seq) index, so the writer's work per write no longer grows
with the rows held. It is measured as SQLite VM instructions (a progress handler on the writer's
connection): deterministic, and proportional to the rows a statement walks, where wall time on a
shared machine is neither. The assertion leaves a wide margin (2x + 100 instructions; the old walk
was thousands of times more). Wall time is printed for the record.

The store the verbs call, over a real SQLite database. The rows are written straight to the tables
(through the verbs they take the plugin ~100 s of its write budget, which it may well spend), with
the count the store keeps beside them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from plugbox.errors import StorageError
from plugbox.storage.conversations import ConversationStore
from plugbox.storage.db import Connection
from plugbox.storage.quota import PAGE_SIZE, WriteBudget
from plugbox.storage.sqlite import SqliteDatabase

ROWS_BOUND = 100_000  # conversation_rows_per_plugin, the default
MESSAGES_BOUND = 10_000  # conversation_messages_per_plugin, the default
SMALL = 10
WRITES = 20  # measured, then as many timed
CHAT = {"sessionId": "default", "chatId": "chat"}


def _fill(conn: Connection, kind: str, plugin_id: str, rows: int) -> None:
    """`rows` rows of `kind` for the plugin, and the count the store keeps beside them."""
    if kind == "mappings":
        conn.executemany("INSERT INTO conversation_mappings (plugin_id, conversation_id, provider, external_id, "
                         "session_id, chat_id, updated_at) VALUES (?, ?, 'crm', ?, 'default', 'chat', 0.0)",
                         [(plugin_id, f"c{i}", f"e{i}") for i in range(rows)])
    elif kind == "handover":
        conn.executemany("INSERT INTO conversation_handover (plugin_id, ref, state, updated_at) "
                         "VALUES (?, ?, 'bot', 0.0)", [(plugin_id, f"c{i}") for i in range(rows)])
    else:
        conn.executemany("INSERT INTO conversation_messages (plugin_id, conversation_id, session_id, chat_id, "
                         "text, sent_at) VALUES (?, 'conv', 'default', 'chat', ?, 0.0)",
                         [(plugin_id, f"old{i}") for i in range(rows)])
    conn.execute("INSERT INTO conversation_counts (plugin_id, kind, n) VALUES (?, ?, ?)", (plugin_id, kind, rows))


class _Writer:
    """What the writer's connection does per write: VM instructions, counted by a progress handler,
    and (without the handler, which slows every instruction) wall time."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self.steps = 0

    def _tick(self) -> int:
        self.steps += 1
        return 0  # go on

    async def per_write(self, write: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
        """(median VM instructions, median seconds) of WRITES calls of `write(i)` each, with
        i = 0 .. 2 x WRITES - 1 in all."""
        steps, took = [], []
        self._db._writer.set_progress_handler(self._tick, 1)  # the writer thread is idle between writes
        for i in range(WRITES):
            before = self.steps
            await write(i)
            steps.append(self.steps - before)
        self._db._writer.set_progress_handler(None, 1)
        for i in range(WRITES, 2 * WRITES):
            started = time.perf_counter()
            await write(i)
            took.append(time.perf_counter() - started)
        return statistics.median(steps), statistics.median(took)


def _refused_new_row(store: ConversationStore, kind: str, plugin_id: str) -> Callable[[int], Awaitable[object]]:
    async def write(i: int) -> None:
        with pytest.raises(StorageError, match="the most allowed"):
            if kind == "mappings":
                await store.upsert_mapping(plugin_id, {"conversationId": f"new{i}", "provider": "crm",
                                                       "externalId": f"x{i}", **CHAT})
            else:
                await store.set_handover(plugin_id, f"new{i}", "bot")
    return write


@pytest.mark.parametrize("kind", ["mappings", "handover"])
async def test_a_refused_new_row_costs_the_writer_no_more_at_the_bound_than_near_empty(
        tmp_path: Path, kind: str) -> None:
    db = SqliteDatabase(tmp_path / "plugbox.db")
    # A clock that never moves: each plugin's budget holds exactly 2 x WRITES pages, then refuses.
    budget = WriteBudget(1, 2 * WRITES * PAGE_SIZE - 1, 0.0, clock=lambda: 0.0)
    big = ConversationStore(db, rows_per_plugin=ROWS_BOUND, write_budget=budget)
    small = ConversationStore(db, rows_per_plugin=SMALL, write_budget=budget)
    try:
        await db.write(lambda c: _fill(c, kind, "hostile", ROWS_BOUND), owner="hostile")
        await db.write(lambda c: _fill(c, kind, "quiet", SMALL), owner="quiet")
        writer = _Writer(db)
        near_empty, near_empty_s = await writer.per_write(_refused_new_row(small, kind, "quiet"))
        at_bound, at_bound_s = await writer.per_write(_refused_new_row(big, kind, "hostile"))
        print(f"\nwriter work per refused new {kind} row: {near_empty:.0f} VM instructions / "
              f"{near_empty_s * 1000:.2f} ms at {SMALL} rows, {at_bound:.0f} / {at_bound_s * 1000:.2f} ms "
              f"at {ROWS_BOUND}")
        assert at_bound <= 2 * near_empty + 100, (
            f"a refused write cost the writer {at_bound:.0f} VM instructions at {ROWS_BOUND} rows, "
            f"{near_empty:.0f} at {SMALL}: the check walks the plugin's rows")

        # Who paid: each refused write took a page of the hostile plugin's own budget, now spent.
        with pytest.raises(StorageError, match="storage write budget of plugin 'hostile' is spent"):
            await big.set_handover("hostile", "one-more", "bot")
        assert budget.refused == {"hostile": 1}
        # The host still serves the others: a neighbour's new row is stored.
        await big.upsert_mapping("neighbour", {"conversationId": "n1", "provider": "crm", "externalId": "n1", **CHAT})
        assert big.get_mapping("neighbour", "n1") is not None
        (held,) = db.read(lambda c: c.execute(f"SELECT count(*) FROM conversation_{kind} "
                                              "WHERE plugin_id = 'hostile'").fetchone())
        assert held == ROWS_BOUND  # and the hostile plugin got no row past its bound
    finally:
        db.close_sync()


async def test_a_send_at_the_message_bound_costs_the_writer_no_more_than_near_empty(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "plugbox.db")
    budget = WriteBudget(1 << 40, 1 << 40, 10.0)  # the sends' budget is not what is looked at here
    big = ConversationStore(db, messages_per_plugin=MESSAGES_BOUND, write_budget=budget)
    small = ConversationStore(db, messages_per_plugin=SMALL, write_budget=budget)

    def send(store: ConversationStore, plugin_id: str) -> Callable[[int], Awaitable[object]]:
        envelope = {"conversationId": "conv", "text": "old", **CHAT}  # the size of the rows it pushes out
        return lambda i: store.record_sent(plugin_id, envelope, None)

    try:
        await db.write(lambda c: _fill(c, "messages", "hostile", MESSAGES_BOUND), owner="hostile")
        await db.write(lambda c: _fill(c, "messages", "quiet", SMALL), owner="quiet")
        writer = _Writer(db)
        near_empty, near_empty_s = await writer.per_write(send(small, "quiet"))
        at_bound, at_bound_s = await writer.per_write(send(big, "hostile"))
        print(f"\nwriter work per send at the message bound: {near_empty:.0f} VM instructions / "
              f"{near_empty_s * 1000:.2f} ms at {SMALL} records, {at_bound:.0f} / {at_bound_s * 1000:.2f} ms "
              f"at {MESSAGES_BOUND}")
        assert at_bound <= 2 * near_empty + 100, (
            f"a send cost the writer {at_bound:.0f} VM instructions at {MESSAGES_BOUND} records, "
            f"{near_empty:.0f} at {SMALL}: the rolling bound walks the plugin's records")
        # Each send still pushed out exactly the plugin's oldest record, and only its own.
        for plugin_id, bound in (("hostile", MESSAGES_BOUND), ("quiet", SMALL)):
            texts = [t for (t,) in db.read(lambda c, p=plugin_id: c.execute(
                "SELECT text FROM conversation_messages WHERE plugin_id = ? ORDER BY seq", (p,)).fetchall())]
            old = [f"old{i}" for i in range(bound)]
            assert texts == (old + ["old"] * 2 * WRITES)[2 * WRITES:], plugin_id
    finally:
        db.close_sync()
