"""The host-wide total on remembered `dedupOn` keys (`ingress_dedup_keys_total`, `ingress.dedup`):
past it, the plugin furthest over its share min(per plugin, total // plugins holding keys) loses its
oldest keys, so the host never holds more than the total and a plugin within its share never loses
a key to its neighbours. The per-plugin counts the bounds read stay equal to the keys really held
through every path that adds or removes one, and an older database's counts are filled in by its
migration.

The storage contract: every test runs once per backend (SQLite and PostgreSQL, see `make_database`
in tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from plugbox.errors import ConfigError
from plugbox.ingress.dedup import PLUGIN, TOTAL
from plugbox.ingress.store import DedupKey, IngressStore, NewDelivery
from plugbox.settings import load_settings
from plugbox.storage.db import Connection, Database
from plugbox.storage.postgres import PostgresDatabase

WINDOW = 1000.0


def _key(n: int | str) -> DedupKey:
    return DedupKey("default", "r", f"k{n}", WINDOW)


def _store(db: Database, *, per_plugin: int, total: int | None) -> IngressStore:
    return IngressStore(db, history_per_plugin=10, dedup_keys_per_plugin=per_plugin, dedup_keys_total=total)


async def _add(store: IngressStore, plugin: str, keys: range, now: float = 0.0) -> None:
    """Claim new keys for the plugin, one a second apart (so the first is the oldest)."""
    for n in keys:
        assert await store.claim(plugin, _key(n), now + n)


async def _remembered(store: IngressStore, plugin: str, keys: range, now: float = 0.0) -> list[bool]:
    """Whether each key is still remembered (a repeat is a duplicate). Probing a forgotten key adds it
    back: probe last."""
    return [not await store.claim(plugin, _key(n), now + 1) for n in keys]


def _real(db: Database) -> dict[str, int]:
    """The keys each plugin really holds, counted over the keys table."""
    rows = db.read(lambda c: c.execute("SELECT plugin_id, count(*) FROM ingress_dedup GROUP BY plugin_id").fetchall())
    return {str(p): int(n) for p, n in rows}


async def test_past_the_total_the_plugin_holding_the_most_loses_its_oldest(any_db: Database) -> None:
    store = _store(any_db, per_plugin=10, total=10)
    await _add(store, "hog", range(10))  # alone: its share is its own bound
    await _add(store, "quiet", range(3), now=100.0)  # two holders: shares of 5; each key costs the hog one
    assert store.dedup_keys_held() == {"hog": 7, "quiet": 3}
    assert store.dedup.evicted == {("hog", TOTAL): 3}
    assert await _remembered(store, "quiet", range(3), now=100.0) == [True] * 3
    assert await _remembered(store, "hog", range(3, 10)) == [True] * 7  # its newest kept
    assert await _remembered(store, "hog", range(3)) == [False] * 3  # its oldest went


async def test_the_host_never_holds_more_than_the_total_and_a_plugin_within_its_share_keeps_every_key(
        any_db: Database) -> None:
    store = _store(any_db, per_plugin=50, total=100)
    await _add(store, "victim", range(5))
    for n in range(60):  # three hogs take turns, each past its share of 25
        for hog in ("hog1", "hog2", "hog3"):
            await _add(store, hog, range(n, n + 1))
            assert sum(store.dedup_keys_held().values()) <= 100
    held = store.dedup_keys_held()
    assert held["victim"] == 5 and sum(held.values()) == 100
    assert all(held[h] <= 50 for h in ("hog1", "hog2", "hog3"))
    assert await _remembered(store, "victim", range(5)) == [True] * 5
    assert {p for p, _ in store.dedup.evicted} == {"hog1", "hog2", "hog3"}


async def test_a_plugin_past_its_share_loses_only_its_own_keys(any_db: Database) -> None:
    store = _store(any_db, per_plugin=10, total=10)
    await _add(store, "a", range(5))
    await _add(store, "b", range(5), now=10.0)  # the host is full, both at their share
    await _add(store, "b", range(5, 8), now=10.0)  # b past its share pays for it, not a
    assert store.dedup_keys_held() == {"a": 5, "b": 5}
    assert store.dedup.evicted == {("b", TOTAL): 3}
    assert await _remembered(store, "a", range(5)) == [True] * 5


async def test_on_a_tie_the_plugin_that_added_the_key_pays(any_db: Database) -> None:
    store = _store(any_db, per_plugin=10, total=11)
    await _add(store, "a", range(6))
    await _add(store, "b", range(6), now=10.0)  # its sixth ties it with a, both past their share of 5
    assert store.dedup_keys_held() == {"a": 6, "b": 5}
    assert store.dedup.evicted == {("b", TOTAL): 1}


async def test_the_excess_of_a_lowered_total_is_taken_from_those_over_their_share(
        make_database: Callable[[], Database]) -> None:
    db = make_database()
    await _add(_store(db, per_plugin=10, total=30), "a", range(10))
    await _add(_store(db, per_plugin=10, total=30), "b", range(10))
    store = _store(db, per_plugin=10, total=12)  # restarted with a smaller total
    await _add(store, "c", range(1))
    held = store.dedup_keys_held()
    assert sum(held.values()) == 12 and held["c"] == 1 and held["a"] >= 4 and held["b"] >= 4


async def test_the_per_plugin_bound_forgets_exactly_the_oldest_keys_past_it(any_db: Database) -> None:
    store = _store(any_db, per_plugin=3, total=None)
    for n in range(5):  # every key expires at the same instant: still one forgotten per key past the bound
        assert await store.claim("p", _key(n), 0.0)
    assert store.dedup_keys_held() == {"p": 3}
    assert store.dedup.evicted == {("p", PLUGIN): 2}


async def test_the_counts_follow_every_path_that_adds_or_removes_keys(any_db: Database) -> None:
    store = _store(any_db, per_plugin=4, total=6)
    await _add(store, "a", range(6))  # trimmed to 4 by its own bound
    assert store.dedup_keys_held() == _real(any_db) == {"a": 4}
    await store.release("a", _key(5))  # a failed sync request forgets its key
    await store.release("a", _key(99))  # a key never held changes nothing
    assert store.dedup_keys_held() == _real(any_db) == {"a": 3}
    assert await store.claim("a", _key(4), WINDOW + 10)  # expired: replaced by itself
    assert store.dedup_keys_held() == _real(any_db) == {"a": 3}
    await _add(store, "b", range(4))  # its fourth key passes the total: b, now the largest, pays
    assert store.dedup_keys_held() == _real(any_db) == {"a": 3, "b": 3}
    queued = await store.enqueue(NewDelivery(id="d1", plugin_id="c", instance_id="default", route="r",
                                             request=b"x"), _key(0), 0.0, plugin_max=10, route_max=10, bytes_max=100)
    assert queued.outcome == "queued"
    assert store.dedup_keys_held() == _real(any_db) == {"a": 2, "b": 3, "c": 1}  # a tie: the smallest id pays
    await store.drop_plugin("b")  # uninstalled: its keys and its count go
    assert store.dedup_keys_held() == _real(any_db) and "b" not in store.dedup_keys_held()
    await store.release("c", _key(0))  # a plugin left with none holds no count row either
    assert any_db.read(lambda c: c.execute(
        "SELECT count(*) FROM ingress_dedup_counts WHERE plugin_id = 'c'").fetchone()[0]) == 0


async def test_an_older_database_gets_its_counts_from_its_keys(make_database: Callable[[], Database]) -> None:
    db = make_database()
    store = _store(db, per_plugin=100, total=None)
    await _add(store, "a", range(7))
    await _add(store, "b", range(2))

    def before_the_migration(c: Connection) -> None:  # the schema as migration 0008 left it
        c.execute("DROP TABLE ingress_dedup_counts")
        c.execute("DELETE FROM schema_migrations WHERE version = 9")

    await db.write(before_the_migration)
    await db.close()
    reopened = make_database()
    assert _store(reopened, per_plugin=100, total=None).dedup_keys_held() == {"a": 7, "b": 2}


def test_the_total_must_hold_one_plugins_keys() -> None:
    with pytest.raises(ConfigError, match=r"ingress_dedup_keys_total \(10\) must be at least "
                                          r"ingress_dedup_keys_per_plugin \(20\)"):
        load_settings(environ={"PLUGBOX_INGRESS_DEDUP_KEYS_TOTAL": "10",
                               "PLUGBOX_INGRESS_DEDUP_KEYS_PER_PLUGIN": "20"})
    assert load_settings(environ={}).ingress_dedup_keys_total == 1_000_000


async def test_two_hosts_sharing_a_database_pass_the_total_by_at_most_one_key_and_then_return(
        make_postgres_url: Callable[[], str]) -> None:
    url = make_postgres_url()
    one, two = PostgresDatabase(url), PostgresDatabase(url)
    try:
        stores = [_store(db, per_plugin=40, total=60) for db in (one, two)]
        plugins = ["p1", "p2", "p3", "p4"]
        # Each host claims for every plugin at once: each host has one writer, so at most one
        # key of the other host's is uncommitted when a host checks the total.
        await asyncio.gather(*(_add(stores[i], p, range(i * 100, i * 100 + 40)) for i in range(2) for p in plugins))
        assert 60 <= sum(_real(one).values()) <= 61
        assert stores[0].dedup_keys_held() == _real(one)  # no count was lost to the race
        await _add(stores[1], "p1", range(500, 501))  # the next key added brings it back
        assert sum(_real(one).values()) == 60
    finally:
        await one.close()
        await two.close()
