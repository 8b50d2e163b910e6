"""The host-wide sweep of expired `dedupOn` keys (`IngressStore.sweep_expired`, `DedupKeys.sweep`, run
by `IngressQueue` every `ingress_dedup_sweep_interval_ms`): the keys whose window ended leave the
table and the per-plugin counts, whichever plugin holds them, a live key stays, and a large backlog
goes in bounded batches with other plugins' writes between them. The counts stay equal to the keys
really held, also when two hosts sweep at once beside claims of the same keys.

The storage contract: the store tests run once per backend (SQLite and PostgreSQL, see
`make_database` in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from plugbox.ingress.queue import IngressQueue
from plugbox.ingress.store import DedupKey, IngressStore
from plugbox.settings import DEFAULTS, load_settings
from plugbox.storage.db import Connection, Database
from plugbox.storage.postgres import PostgresDatabase

WINDOW = 1000.0


def _key(n: int | str) -> DedupKey:
    return DedupKey("default", "r", f"k{n}", WINDOW)


def _store(db: Database) -> IngressStore:
    return IngressStore(db, history_per_plugin=10, dedup_keys_per_plugin=100_000, dedup_keys_total=None)


async def _add(store: IngressStore, plugin: str, keys: range, now: float = 0.0) -> None:
    """Claim new keys for the plugin, one a second apart: key n expires at now + n + WINDOW."""
    for n in keys:
        assert await store.claim(plugin, _key(n), now + n)


def _real(db: Database) -> dict[str, int]:
    """The keys each plugin really holds, counted over the keys table."""
    rows = db.read(lambda c: c.execute("SELECT plugin_id, count(*) FROM ingress_dedup GROUP BY plugin_id").fetchall())
    return {str(p): int(n) for p, n in rows}


def _count_rows(db: Database) -> int:
    return int(db.read(lambda c: c.execute("SELECT count(*) FROM ingress_dedup_counts").fetchone()[0]))


async def test_expired_keys_of_every_plugin_leave_and_live_ones_stay(any_db: Database) -> None:
    store = _store(any_db)
    await _add(store, "a", range(5))  # expire at 1000 .. 1004
    await _add(store, "b", range(3), now=2.0)  # expire at 1002 .. 1004
    await _add(store, "c", range(2), now=500.0)  # expire at 1500, 1501
    assert await store.sweep_expired(999.0) == 0  # nothing expired yet
    assert await store.sweep_expired(WINDOW + 2.0) == 4  # a's 0, 1, 2 and b's 0: expired at or before
    assert store.dedup_keys_held() == _real(any_db) == {"a": 2, "b": 2, "c": 2}
    assert [await store.claim("a", _key(n), WINDOW + 2.0) for n in (3, 4)] == [False, False]  # still remembered
    assert await store.sweep_expired(1501.0) == 6
    assert store.dedup_keys_held() == _real(any_db) == {}
    assert _count_rows(any_db) == 0  # a plugin left with none holds no count row
    assert await store.claim("a", _key(0), 1501.0)  # a swept key is free again


async def test_a_large_backlog_goes_in_batches_with_other_plugins_writes_between(any_db: Database) -> None:
    store = _store(any_db)
    for plugin in ("a", "b", "c"):
        await _add(store, plugin, range(12))  # 36 keys, all expired at 2000
    ran: list[str] = []  # the transactions in the order the writer ran them
    first_batch_waits = threading.Event()
    write = any_db.write

    async def recorded(fn: Callable[[Connection], Any], after: Any = None, *, owner: Any = None) -> Any:
        def run(c: Connection) -> Any:
            if owner is None and not ran:
                first_batch_waits.wait(10)  # until the plugin's writes are queued behind it
            result = fn(c)
            ran.append(f"sweep {result}" if owner is None else owner)
            return result
        return await write(run, after, owner=owner)

    any_db.write = recorded  # type: ignore[method-assign]
    sweep = asyncio.create_task(store.sweep_expired(2000.0, batch=10))
    await asyncio.sleep(0)  # the first batch is on the writer
    claims = [asyncio.create_task(store.claim("quiet", _key(n), 2000.0)) for n in range(2)]
    await asyncio.sleep(0)  # both claims are queued
    first_batch_waits.set()
    assert await sweep == 36
    assert all(await asyncio.gather(*claims))
    assert [r for r in ran if r.startswith("sweep")] == ["sweep 10", "sweep 10", "sweep 10", "sweep 6"]
    assert ran[:2] == ["sweep 10", "quiet"]  # queued during the first batch: ran before the second
    assert store.dedup_keys_held() == _real(any_db) == {"quiet": 2}


async def test_two_hosts_sweeping_at_once_beside_claims_keep_the_counts_exact(
        make_postgres_url: Callable[[], str]) -> None:
    url = make_postgres_url()
    one, two = PostgresDatabase(url), PostgresDatabase(url)
    try:
        plugins = [f"p{i}" for i in range(5)]

        def backlog(c: Connection) -> None:  # 600 keys a plugin, all expired at 2000, counted as claims do
            c.executemany("INSERT INTO ingress_dedup (plugin_id, instance_id, route, key, expires_at) "
                          "VALUES (?, 'default', 'r', ?, ?)",
                          [(p, f"k{n}", 1000.0 + n) for p in plugins for n in range(600)])
            c.execute("INSERT INTO ingress_dedup_counts (plugin_id, keys) "
                      "SELECT plugin_id, count(*) FROM ingress_dedup GROUP BY plugin_id")

        await one.write(backlog)
        stores = [_store(db) for db in (one, two)]

        async def reclaim(host: int, plugin: str) -> None:  # the same keys come back meanwhile
            for n in range(host, 60, 2):
                assert await stores[host].claim(plugin, _key(n), 2000.0)

        swept, *_ = await asyncio.gather(
            asyncio.gather(*(s.sweep_expired(2000.0, batch=100) for s in stores)),
            *(reclaim(h, p) for h in range(2) for p in plugins))
        assert all(swept)  # both hosts swept
        assert stores[1].dedup_keys_held() == _real(one)  # nothing counted twice or lost to the race
        await stores[0].sweep_expired(2000.0)  # what a key busy at that instant left to the next sweep
        assert _real(one) == {p: 60 for p in plugins}  # every expired key gone, every reclaimed key kept
        assert stores[1].dedup_keys_held() == _real(one)
    finally:
        await one.close()
        await two.close()


async def test_the_sweep_waits_for_no_row_another_transaction_holds(make_postgres_url: Callable[[], str]) -> None:
    """A claim in flight holds its plugin's count and its keys: the sweep passes them by (and takes
    them at the next sweep) instead of waiting, so it can never be one side of a deadlock."""
    import psycopg

    url = make_postgres_url()
    db = PostgresDatabase(url)
    try:
        store = _store(db)
        for plugin in ("busy", "key-held", "free"):
            await _add(store, plugin, range(3))  # expire at 1000 .. 1002
        with psycopg.connect(url) as other:  # a transaction of another host, left open
            other.execute("UPDATE ingress_dedup_counts SET keys = keys WHERE plugin_id = 'busy'")
            other.execute("SELECT 1 FROM ingress_dedup WHERE plugin_id = 'key-held' AND key = 'k0' FOR UPDATE")
            async with asyncio.timeout(5):
                assert await store.sweep_expired(2000.0) == 5
            assert _real(db) == store.dedup_keys_held() == {"busy": 3, "key-held": 1}
            other.rollback()
        assert await store.sweep_expired(2000.0) == 4
        assert _real(db) == store.dedup_keys_held() == {}
    finally:
        await db.close()


class _Ticks:
    """The queue's clock, moved by the test: each sleep is recorded and waits for the next tick."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self._ticks: asyncio.Queue[float] = asyncio.Queue()
        self._ticked = 0
        self._changed = asyncio.Condition()

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        async with self._changed:
            self.slept.append(seconds)
            self._changed.notify_all()
        self.now = await self._ticks.get()

    async def tick(self, now: float) -> None:
        """Once the queue sleeps, move to `now`; return when it sleeps again (its sweep has run)."""
        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(lambda: len(self.slept) > self._ticked)
            self._ticked += 1
            await self._ticks.put(now)
            await self._changed.wait_for(lambda: len(self.slept) > self._ticked)


async def test_the_host_sweeps_every_interval(any_db: Database) -> None:
    settings = msgspec.structs.replace(DEFAULTS, ingress_dedup_sweep_interval_ms=5000)

    async def no_dispatch(*_args: Any) -> Any:
        raise AssertionError("nothing is delivered here")

    clock = _Ticks()
    queue = IngressQueue(any_db, settings, dispatch=no_dispatch, running=lambda: [], clock=clock,
                         sweep_sleep=clock.sleep)
    store = queue._store
    await _add(store, "a", range(3))  # expire at 1000 .. 1002
    queue.start()
    try:
        await clock.tick(999.0)
        assert store.dedup_keys_held() == {"a": 3}
        await clock.tick(1001.0)
        assert store.dedup_keys_held() == _real(any_db) == {"a": 1}
        await clock.tick(1002.0)
        assert store.dedup_keys_held() == _real(any_db) == {}
        assert clock.slept == [5.0] * 4
    finally:
        await queue.stop()
    assert load_settings(environ={}).ingress_dedup_sweep_interval_ms == 60_000
