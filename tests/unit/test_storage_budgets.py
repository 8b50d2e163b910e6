"""What a plugin may make the storage spend (issue 12): the quota counts bytes on disk, each plugin's
writes are rate-limited and take turns with other plugins' writes, and a listing costs what it returns,
off the event loop."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plugbox.errors import StorageError
from plugbox.storage.conversations import ConversationStore
from plugbox.storage.db import Database
from plugbox.storage.kv import PluginStorage, prefix_end
from plugbox.storage.quota import PAGE_SIZE, WriteBudget, row_cost
from plugbox.storage.sqlite import CHECKPOINT_WAL_BYTES, SqliteDatabase


@pytest.fixture
def db(any_db: Database) -> Database:
    return any_db  # once per backend


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "plugbox.db")
    yield database
    await database.close()


def _unlimited() -> WriteBudget:
    return WriteBudget(1 << 40, 1 << 40, 1.0)


def _table_bytes(db: Database, table: str) -> int:
    return int(db.read(lambda c: c.execute("SELECT sum(pgsize) FROM dbstat WHERE name = ?", (table,)).fetchone()[0]))


# -- the quota counts bytes on disk ------------------------------------------------------------------


def test_a_value_past_the_local_limit_costs_its_overflow_pages() -> None:
    assert row_cost(900) < PAGE_SIZE // 2
    assert row_cost(1100) > PAGE_SIZE  # a whole overflow page, mostly empty
    assert row_cost(10 * PAGE_SIZE) >= 10 * PAGE_SIZE


@pytest.mark.parametrize(("rows", "value", "stride"), [
    (300, "v", 1),  # keys in order: pages fill up
    (300, "v", 7919),  # keys in random order: pages split half empty
    (150, "x" * 1100, 1),  # just past the local limit: an overflow page each
    (40, b"\0" * 30_000, 1),
])
async def test_counted_usage_covers_the_real_sqlite_table_growth_without_inflating_it(
    sqlite_db: SqliteDatabase, rows: int, value: object, stride: int
) -> None:
    db = sqlite_db
    kv = PluginStorage(db, 1 << 30, write_budget=_unlimited())
    empty = _table_bytes(db, "plugin_kv")
    for i in range(rows):
        await kv.set("plugin.with.a.long-id", f"key-{i * stride % rows:05d}", value)
    real = _table_bytes(db, "plugin_kv") - empty
    counted = kv.usage("plugin.with.a.long-id")
    assert real <= counted * 1.1  # never the 4-22x undercount of key + value
    assert counted <= real * 1.6 + 2 * PAGE_SIZE


# -- write budget ------------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _budget(t: FakeTime) -> WriteBudget:
    return WriteBudget(bytes_per_s=10 * PAGE_SIZE, burst_bytes=20 * PAGE_SIZE, max_wait_s=2.0,
                       clock=t.clock, sleep=t.sleep)


async def test_writes_within_the_burst_do_not_wait() -> None:
    t = FakeTime()
    budget = _budget(t)
    for _ in range(20):
        await budget.spend("p", 100)  # each costs at least a page
    assert t.slept == []


async def test_a_plugin_in_debt_waits_for_its_own_bucket() -> None:
    t = FakeTime()
    budget = _budget(t)
    await budget.spend("p", 25 * PAGE_SIZE)  # a full bucket lets one large write through, into debt
    await budget.spend("p", PAGE_SIZE)
    assert t.slept == [pytest.approx(0.5)]  # 5 pages of debt at 10 pages/s
    await budget.spend("other", PAGE_SIZE)  # another plugin's bucket is its own
    assert len(t.slept) == 1


async def test_a_write_that_would_wait_past_the_limit_is_refused_naming_the_setting() -> None:
    t = FakeTime()
    budget = _budget(t)
    await budget.spend("p", 50 * PAGE_SIZE)  # 30 pages of debt: 3 s
    with pytest.raises(StorageError, match=r"plugin 'p' is spent.*storage_write_bytes_per_s.*wait 3\.0 s"):
        await budget.spend("p", PAGE_SIZE)
    assert budget.refused == {"p": 1}
    t.now += 1.5  # refilled to 1.5 s of debt: waits, within the limit
    await budget.spend("p", PAGE_SIZE)
    assert t.slept == [pytest.approx(1.5)]


async def test_storage_set_refuses_a_plugin_past_its_budget_and_serves_its_neighbour(db: Database) -> None:
    t = FakeTime()
    kv = PluginStorage(db, 1 << 30, write_budget=_budget(t))
    await kv.set("flood", "big", b"x" * 60 * PAGE_SIZE)
    with pytest.raises(StorageError, match="write budget of plugin 'flood'"):
        await kv.set("flood", "more", 1)
    assert kv.get("flood", "more") == (False, None)
    await kv.set("neighbour", "k", 1)
    assert kv.get("neighbour", "k") == (True, 1) and t.slept == []


# -- the writer serves plugins in turn ---------------------------------------------------------------


async def test_one_plugins_queue_of_writes_does_not_sit_in_front_of_anothers_write(db: Database) -> None:
    order: list[str] = []
    gate = threading.Event()

    def job(name: str, hold: bool = False) -> object:
        def fn(_conn: object) -> None:
            if hold:
                gate.wait(5)
            order.append(name)

        return fn

    first = asyncio.ensure_future(db.write(job("flood-0", hold=True), owner="flood"))
    await asyncio.sleep(0.05)  # the writer is now inside flood-0
    floods = [asyncio.ensure_future(db.write(job(f"flood-{i}"), owner="flood")) for i in range(1, 20)]
    victim = asyncio.ensure_future(db.write(job("victim"), owner="victim"))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(first, victim, *floods)
    assert order.index("victim") <= 2  # behind the running write and at most one more turn
    assert [n for n in order if n.startswith("flood")] == [f"flood-{i}" for i in range(20)]  # FIFO per owner


async def test_one_plugins_queue_of_scans_does_not_sit_in_front_of_anothers_scan(db: Database) -> None:
    order: list[str] = []
    gate = threading.Event()

    def job(name: str, hold: bool = False) -> object:
        def fn(_conn: object) -> None:
            if hold:
                gate.wait(5)
            order.append(name)

        return fn

    first = asyncio.ensure_future(db.scan(job("flood-0", hold=True), owner="flood"))
    await asyncio.sleep(0.05)  # the scan thread is now inside flood-0
    floods = [asyncio.ensure_future(db.scan(job(f"flood-{i}"), owner="flood")) for i in range(1, 20)]
    victim = asyncio.ensure_future(db.scan(job("victim"), owner="victim"))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(first, victim, *floods)
    assert order.index("victim") <= 2  # behind the running scan and at most one more turn
    assert [n for n in order if n.startswith("flood")] == [f"flood-{i}" for i in range(20)]  # FIFO per owner


async def test_the_sqlite_wal_is_checkpointed_by_the_writes_that_grow_it(sqlite_db: SqliteDatabase) -> None:
    db = sqlite_db
    kv = PluginStorage(db, 1 << 30, write_budget=_unlimited())
    for i in range(24):
        await kv.set("flood", f"k{i}", b"\0" * (1 << 20))
    wal = os.stat(f"{db.path}-wal").st_size
    assert wal <= CHECKPOINT_WAL_BYTES + (2 << 20)


# -- listing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["a", "ab", "a\U0010ffff", "\ud7ff", "é", "z\U0010ffff\U0010ffff"])
def test_prefix_end_bounds_exactly_the_keys_with_the_prefix(prefix: str) -> None:
    end = prefix_end(prefix)
    samples = [prefix, prefix + "\0", prefix + "\U0010ffff", prefix[:-1], prefix[:-1] + "\U0010ffff",
               "b", "\ue000", "zz", "a"]
    for key in samples:
        in_range = key >= prefix and (end is None or key.encode() < end.encode())
        assert in_range == key.startswith(prefix), key


async def _fill(db: Database, plugin_id: str, count: int) -> None:
    await db.write(lambda c: c.executemany(
        "INSERT INTO plugin_kv (plugin_id, key, value, size) VALUES (?, ?, ?, 10)",
        [(plugin_id, f"k{i:06d}", b"\xc0") for i in range(count)]))


async def test_listing_more_keys_than_the_cap_is_refused_naming_it(db: Database) -> None:
    kv = PluginStorage(db, list_max_keys=100)
    await _fill(db, "p", 101)
    with pytest.raises(StorageError, match=r"more than 100 keys start with 'k'.*storage_list_max_keys"):
        await kv.list_keys("p", "k")
    assert len(await kv.list_keys("p", "k0000")) == 100  # a narrower prefix fits


async def test_listing_pages_through_every_key_with_after_and_limit(db: Database) -> None:
    kv = PluginStorage(db, list_max_keys=100)
    await _fill(db, "p", 250)
    keys: list[str] = []
    while page := await kv.list_keys("p", after=keys[-1] if keys else "", limit=1000):
        assert len(page) <= 100  # the limit is clamped to the cap
        keys += page
    assert keys == [f"k{i:06d}" for i in range(250)]


async def test_a_listing_runs_off_the_event_loop_and_costs_what_it_returns(db: Database) -> None:
    kv = PluginStorage(db)
    await _fill(db, "p", 100_000)
    seen: list[str] = []
    real_scan = db.scan

    async def spy(fn, *, owner=None):  # type: ignore[no-untyped-def]
        def on_thread(conn):  # type: ignore[no-untyped-def]
            seen.append(threading.current_thread().name)
            return fn(conn)

        return await real_scan(on_thread, owner=owner)

    db.scan = spy  # type: ignore[method-assign]
    started = time.perf_counter()
    assert await kv.list_keys("p", "a") == []  # a prefix before every key: the range is empty
    assert time.perf_counter() - started < 0.05
    assert seen == ["plugbox-db-scan_0"]


# -- conversation records share the quota ------------------------------------------------------------


def _envelope(text: str, conversation: str = "conv-1") -> dict[str, str]:
    return {"conversationId": conversation, "sessionId": "main", "chatId": "15550100001@c.us", "text": text}


async def test_conversation_records_are_charged_to_the_plugins_quota_at_their_size_in_sqlite(
    sqlite_db: SqliteDatabase,
) -> None:
    db = sqlite_db
    kv = PluginStorage(db, 1 << 30, write_budget=_unlimited())
    store = ConversationStore(db, quota_bytes=1 << 30, write_budget=_unlimited())
    empty = _table_bytes(db, "conversation_messages")
    for i in range(40):
        await store.record_sent("helpdesk", _envelope("t" * 20_000, f"conv-{i % 3}"), f"lb-main-{i}")
    real = _table_bytes(db, "conversation_messages") - empty
    counted = kv.usage("helpdesk")
    assert real <= counted <= real * 1.6
    await store.set_handover("helpdesk", "conv-1", "human")
    await store.upsert_mapping("helpdesk", {"conversationId": "conv-1", "provider": "crm", "externalId": "42",
                                            "sessionId": "main", "chatId": "15550100001@c.us"})
    assert kv.usage("helpdesk") > counted


async def test_a_plugin_full_of_keys_cannot_record_conversations_and_the_refusal_changes_nothing(
    db: Database,
) -> None:
    kv = PluginStorage(db, 40_000, write_budget=_unlimited())
    store = ConversationStore(db, quota_bytes=40_000, write_budget=_unlimited())
    await kv.set("helpdesk", "fill", b"\0" * 30_000)
    before = kv.usage("helpdesk")
    with pytest.raises(StorageError, match=r"storage quota of plugin 'helpdesk': recording this conversation"):
        store.check_room("helpdesk", _envelope("t" * 20_000))
    with pytest.raises(StorageError, match="storage quota of plugin 'helpdesk'"):
        await store.record_sent("helpdesk", _envelope("t" * 20_000), "m1")
    assert store.messages("helpdesk", "conv-1") == [] and kv.usage("helpdesk") == before
    store.check_room("neighbour", _envelope("t" * 20_000))  # the quota is the plugin's own


async def test_messages_dropped_by_the_rolling_log_are_credited_back(db: Database) -> None:
    kv = PluginStorage(db, 1 << 30, write_budget=_unlimited())
    store = ConversationStore(db, messages_per_plugin=3, quota_bytes=1 << 30, write_budget=_unlimited())
    for i in range(3):
        await store.record_sent("helpdesk", _envelope("t" * 5000), f"m{i:02d}")
    full = kv.usage("helpdesk")
    for i in range(3, 30):
        await store.record_sent("helpdesk", _envelope("t" * 5000), f"m{i:02d}")
    assert kv.usage("helpdesk") == full  # each new row paid for by the one it pushed out
    await store.delete_plugin("helpdesk")
    assert kv.usage("helpdesk") == 0
