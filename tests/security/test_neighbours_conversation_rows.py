"""What one refused `mappings.upsert` (or `handover.set` of a new reference) costs the
database writer, the one every plugin's writes share.

A new mapping or handover reference is checked against `conversation_rows_per_plugin` (100,000) with
`SELECT count(*) ... WHERE plugin_id = ?` inside the write (`conversations._check_room`): a walk of
every row the plugin holds, on the writer, per write. A plugin at its bound keeps asking for new
rows: each is refused after the count, costs its write budget one 4 KiB page (so ~1,000 a second
pass `storage_write_bytes_per_s`), and costs the writer the whole count, charged to nobody (the
channel's CPU charge sees only the loop; the write budget sees bytes). Measured here: ~4.6 ms of writer
time per refused write at 100,000 rows, against 0.08 ms at 10 — about five seconds of writer
time for each second of the flood the budget allows: the writer is saturated by one plugin.

The store the verbs call, over a real SQLite database; the rows are written straight to the table
(through the verb they take the plugin ~100 s of its write budget, which it may well spend).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from plugbox.errors import StorageError
from plugbox.storage.conversations import ConversationStore
from plugbox.storage.db import Connection
from plugbox.storage.quota import WriteBudget
from plugbox.storage.sqlite import SqliteDatabase

BIG = 100_000  # conversation_rows_per_plugin, the default
SMALL = 10


def _fill(conn: Connection, plugin_id: str, rows: int) -> None:
    for i in range(rows):
        conn.execute("INSERT INTO conversation_mappings (plugin_id, conversation_id, provider, external_id, "
                     "session_id, chat_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (plugin_id, f"c{i}", "crm", f"e{i}", "default", "chat", 0.0))


async def _refused_write_seconds(store: ConversationStore, plugin_id: str) -> float:
    """The median time of a new mapping refused at the plugin's row bound (the writer's time: the
    write is the only thing running)."""
    took = []
    for i in range(100):
        started = time.perf_counter()
        try:
            await store.upsert_mapping(plugin_id, {"conversationId": f"new{i}", "provider": "crm",
                                                   "externalId": f"x{i}", "sessionId": "default", "chatId": "chat"})
        except StorageError as exc:
            assert "the most allowed" in str(exc)
        else:
            raise AssertionError("a mapping past the plugin's row bound was stored")
        took.append(time.perf_counter() - started)
    return statistics.median(took)


async def test_a_refused_new_row_costs_the_writer_no_more_at_the_bound_than_near_empty(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "plugbox.db")
    budget = WriteBudget(1 << 40, 1 << 40, 10.0)  # the time measured is the writer's, not the budget's
    big = ConversationStore(db, rows_per_plugin=BIG, write_budget=budget)
    small = ConversationStore(db, rows_per_plugin=SMALL, write_budget=budget)
    try:
        await db.write(lambda c: _fill(c, "hostile", BIG), owner="hostile")
        await db.write(lambda c: _fill(c, "quiet", SMALL), owner="quiet")
        near_empty = await _refused_write_seconds(small, "quiet")
        at_bound = await _refused_write_seconds(big, "hostile")
        print(f"writer time per refused new mapping: {near_empty * 1000:.2f} ms at {SMALL} rows, "
              f"{at_bound * 1000:.2f} ms at {BIG} (x ~1,000 a second the write budget lets through)")
        assert at_bound <= 3 * near_empty + 0.0005, (
            f"a refused write cost the writer {at_bound * 1000:.1f} ms at {BIG} rows, "
            f"{near_empty * 1000:.2f} ms at {SMALL}")
    finally:
        db.close_sync()
