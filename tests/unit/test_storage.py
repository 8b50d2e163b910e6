"""Database and PluginStorage (SPEC §8): key rules, plain values, quotas, atomicity and durability.

The storage contract: every test taking `db` or `kv` runs once per backend (SQLite and PostgreSQL,
see `make_database` in tests/conftest.py); the few about one backend's own means say so in their name."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest

from plugbox.errors import ConfigError, DatabaseError, StorageError
from plugbox.storage import migrations
from plugbox.storage.db import Connection, Database
from plugbox.storage.kv import MAX_KEY_CHARS, PluginStorage
from plugbox.storage.postgres import PostgresDatabase
from plugbox.storage.quota import row_cost
from plugbox.storage.sqlite import SqliteDatabase

QUOTA = 2000
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(any_db: Database) -> Database:
    return any_db


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "data" / "plugbox.db")
    yield database
    await database.close()


@pytest.fixture
def kv(db: Database) -> PluginStorage:
    return PluginStorage(db, quota_bytes=QUOTA)


def _cost(key: str, value_bytes: int, plugin: str = "p") -> int:
    """What one row takes on disk, as the quota counts it (see test_quota_cost for the figures)."""
    return row_cost(len(plugin) + len(key.encode()) + value_bytes + 8)


# -- Database ----------------------------------------------------------------------------------------


async def test_database_creates_parent_dir_and_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "db.sqlite"
    database = SqliteDatabase(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        await database.close()


def test_opening_a_file_that_is_not_a_database_names_it(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(StorageError, match=r"junk\.db' cannot be opened"):
        SqliteDatabase(path)


async def test_sqlite_database_runs_wal_with_full_sync_and_foreign_keys(sqlite_db: SqliteDatabase) -> None:
    def pragmas(c: Connection) -> tuple[Any, ...]:
        return tuple(
            c.execute(f"PRAGMA {p}").fetchone()[0] for p in ("journal_mode", "synchronous", "foreign_keys")
        )

    assert await sqlite_db.write(pragmas) == ("wal", 2, 1)  # synchronous 2 == FULL


async def test_write_commits_before_returning_and_read_sees_it(db: Database) -> None:
    await db.write(lambda c: c.execute("CREATE TABLE t (x INTEGER)").close())
    await db.write(lambda c: c.execute("INSERT INTO t VALUES (1)").close())
    assert db.read(lambda c: c.execute("SELECT x FROM t").fetchall()) == [(1,)]


async def test_failed_write_rolls_back_everything_and_reraises(db: Database) -> None:
    await db.write(lambda c: c.execute("CREATE TABLE t (x INTEGER)").close())

    def half_then_fail(c: Connection) -> None:
        c.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await db.write(half_then_fail)
    assert db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 0


async def test_writes_run_on_one_dedicated_thread_off_the_loop(db: Database) -> None:
    threads = {await db.write(lambda c: threading.get_ident()) for _ in range(5)}
    assert len(threads) == 1
    assert threading.get_ident() not in threads


async def test_read_connection_refuses_writes(db: Database) -> None:
    with pytest.raises(DatabaseError):
        db.read(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))


async def test_a_driver_error_in_a_write_is_a_database_error_and_rolls_back(db: Database) -> None:
    def insert_then_break(c: Connection) -> None:
        c.execute("INSERT INTO plugin_registry (plugin_id, record) VALUES (?, ?)", ("a", b"x"))
        c.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(DatabaseError):
        await db.write(insert_then_break)
    assert db.read(lambda c: c.execute("SELECT count(*) FROM plugin_registry").fetchone()[0]) == 0


async def test_migrations_are_recorded_once_and_reopening_applies_none_again(
    make_database: Callable[[], Database],
) -> None:
    first = make_database()
    versions = first.read(lambda c: c.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall())
    assert [v for (v,) in versions] == [m.version for m in migrations.migrations(first.dialect)]
    await first.close()
    second = make_database()
    assert second.read(lambda c: c.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]) == len(versions)


async def test_integrity_check_passes_on_a_healthy_database(db: Database) -> None:
    assert db.integrity_check() is True


async def test_closed_database_refuses_writes_and_close_twice_is_safe(db: Database) -> None:
    database = db
    await database.close()
    await database.close()
    with pytest.raises(StorageError, match="closed"):
        await database.write(lambda c: None)


def test_close_sync_is_safe_to_call_twice(db: Database) -> None:
    database = db
    database.close_sync()
    database.close_sync()
    with pytest.raises(StorageError, match="closed"):
        database.read(lambda c: None)


# -- keys --------------------------------------------------------------------------------------------


async def test_empty_key_is_refused(kv: PluginStorage) -> None:
    with pytest.raises(StorageError, match="must not be empty"):
        await kv.set("p", "", 1)


async def test_key_of_513_chars_is_refused_and_512_accepted(kv: PluginStorage) -> None:
    with pytest.raises(StorageError, match="at most 512"):
        await kv.set("p", "k" * (MAX_KEY_CHARS + 1), 1)
    await kv.set("p", "k" * MAX_KEY_CHARS, 1)
    assert kv.get("p", "k" * MAX_KEY_CHARS) == (True, 1)


async def test_key_with_nul_is_refused(kv: PluginStorage) -> None:
    with pytest.raises(StorageError, match="NUL"):
        await kv.set("p", "a\x00b", 1)


@pytest.mark.parametrize("key", [1, None, b"k", ["k"]])
async def test_key_that_is_not_a_str_is_refused(kv: PluginStorage, key: Any) -> None:
    with pytest.raises(StorageError, match="must be a str"):
        await kv.set("p", key, 1)


async def test_key_with_a_lone_surrogate_is_refused(kv: PluginStorage) -> None:
    with pytest.raises(StorageError, match="lone surrogate"):
        await kv.set("p", "a\ud800", 1)
    with pytest.raises(StorageError, match="lone surrogate"):
        kv.get("p", "a\ud800")


async def test_get_and_delete_apply_the_same_key_rules(kv: PluginStorage) -> None:
    with pytest.raises(StorageError, match="must not be empty"):
        kv.get("p", "")
    with pytest.raises(StorageError, match="NUL"):
        await kv.delete("p", "\x00")


# -- values ------------------------------------------------------------------------------------------


async def test_non_plain_value_is_refused_naming_its_path(kv: PluginStorage) -> None:
    with pytest.raises(StorageError, match=r"value\.items\[3\]: set is not plain data"):
        await kv.set("p", "k", {"items": [1, 2, 3, {4}]})
    assert kv.get("p", "k") == (False, None)


async def test_naive_datetime_is_refused(kv: PluginStorage) -> None:
    with pytest.raises(StorageError, match="naive datetime"):
        await kv.set("p", "k", datetime(2024, 1, 1))


async def test_int_beyond_64_bits_is_refused(kv: PluginStorage) -> None:
    with pytest.raises(StorageError, match="64-bit"):
        await kv.set("p", "k", 2**70)


async def test_nested_value_round_trips(kv: PluginStorage) -> None:
    value = {"a": [1, 2.5, None, True, "x", {"b": []}], "c": {}, "d": -(2**63)}
    await kv.set("p", "k", value)
    assert kv.get("p", "k") == (True, value)


async def test_bytes_round_trip_as_bytes(kv: PluginStorage) -> None:
    await kv.set("p", "k", {"raw": b"\x00\xff"})
    assert kv.get("p", "k") == (True, {"raw": b"\x00\xff"})


async def test_aware_datetime_round_trips_as_the_same_instant_in_utc(kv: PluginStorage) -> None:
    moment = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    await kv.set("p", "k", moment)
    found, back = kv.get("p", "k")
    assert found and back == moment
    assert back.tzinfo == UTC


def test_missing_key_reads_as_not_found(kv: PluginStorage) -> None:
    assert kv.get("p", "nope") == (False, None)


async def test_stored_none_is_distinguished_from_missing(kv: PluginStorage) -> None:
    await kv.set("p", "k", None)
    assert kv.get("p", "k") == (True, None)


# -- quota -------------------------------------------------------------------------------------------


async def test_usage_counts_the_row_on_disk(kv: PluginStorage) -> None:
    await kv.set("p", "ké", b"12345")  # msgpack bin8: 2 header bytes + 5
    assert kv.usage("p") == _cost("ké", 7)


async def test_single_write_larger_than_the_quota_is_refused(kv: PluginStorage) -> None:
    with pytest.raises(StorageError, match="more than the whole quota"):
        await kv.set("p", "k", b"x" * QUOTA)
    assert kv.usage("p") == 0


async def test_write_pushing_the_total_over_the_quota_is_refused(kv: PluginStorage) -> None:
    await kv.set("p", "a", b"x" * 900)
    with pytest.raises(StorageError, match="in use"):
        await kv.set("p", "b", b"x" * 900)


async def test_overwrite_counts_only_the_delta(kv: PluginStorage) -> None:
    await kv.set("p", "k", b"x" * 700)
    await kv.set("p", "k", b"y" * 800)  # would fail if the old 700 were counted again
    assert kv.usage("p") == _cost("k", 3 + 800)  # bin16 header: 3 bytes
    await kv.set("p", "k", b"z")
    assert kv.usage("p") == _cost("k", 2 + 1)


async def test_quotas_are_per_plugin(kv: PluginStorage) -> None:
    await kv.set("p1", "k", b"x" * 900)
    await kv.set("p2", "k", b"x" * 900)
    assert kv.usage("p1") == kv.usage("p2") == _cost("k", 3 + 900, "p1")


async def test_refused_write_leaves_value_and_usage_untouched(kv: PluginStorage) -> None:
    await kv.set("p", "keep", b"x" * 600)
    await kv.set("p", "grow", "small")
    before = kv.usage("p")
    with pytest.raises(StorageError, match="quota"):
        await kv.set("p", "grow", b"x" * 900)
    with pytest.raises(StorageError, match="quota"):
        await kv.set("p", "new", b"x" * 900)
    assert kv.get("p", "grow") == (True, "small")
    assert kv.get("p", "new") == (False, None)
    assert kv.usage("p") == before


async def test_concurrent_writes_cannot_overshoot_the_quota(kv: PluginStorage) -> None:
    results = await asyncio.gather(
        *(kv.set("p", f"k{i}", b"x" * 300) for i in range(10)), return_exceptions=True
    )
    assert sum(r is None for r in results) == QUOTA // _cost("k0", 3 + 300)
    assert all(isinstance(r, StorageError) for r in results if r is not None)
    assert kv.usage("p") <= QUOTA


async def test_delete_frees_usage_and_reports_whether_the_key_existed(kv: PluginStorage) -> None:
    await kv.set("p", "k", b"x" * 900)
    assert await kv.delete("p", "k") is True
    assert await kv.delete("p", "k") is False
    assert kv.usage("p") == 0
    await kv.set("p", "k2", b"x" * 900)


# -- namespaces, listing, drop ---------------------------------------------------------------------


async def test_plugins_do_not_see_each_others_keys(kv: PluginStorage) -> None:
    await kv.set("p1", "k", 1)
    assert kv.get("p2", "k") == (False, None)
    assert kv.list("p2") == []


async def test_list_is_sorted_and_treats_percent_and_underscore_literally(kv: PluginStorage) -> None:
    for key in ("a%b", "axb", "a_c", "abc", "A%b", "b", "a"):
        await kv.set("p", key, 1)
    assert kv.list("p") == ["A%b", "a", "a%b", "a_c", "abc", "axb", "b"]
    assert kv.list("p", "a%") == ["a%b"]
    assert kv.list("p", "a_") == ["a_c"]
    assert kv.list("p", "A") == ["A%b"]
    assert kv.list("p", "zz") == []


async def test_drop_removes_the_whole_namespace_and_only_it(kv: PluginStorage) -> None:
    for key in ("a", "b", "c"):
        await kv.set("p1", key, 1)
    await kv.set("p2", "a", 1)
    assert await kv.drop("p1") == 3
    assert kv.list("p1") == [] and kv.usage("p1") == 0
    assert kv.list("p2") == ["a"]


# -- the read cache: reads must never see a value older than the last committed write ---------------


def _stored(kv: PluginStorage, plugin_id: str, key: str) -> Any:
    """What the database itself holds, bypassing the cache."""
    row = kv._db.read(lambda c: c.execute(
        "SELECT value FROM plugin_kv WHERE plugin_id = ? AND key = ?", (plugin_id, key)).fetchone())
    return msgspec.msgpack.decode(row[0])


async def test_reads_after_set_delete_and_drop_see_each_write(kv: PluginStorage) -> None:
    await kv.set("p", "k", "old")
    assert kv.get("p", "k") == (True, "old") == kv.get("p", "k")  # the second read is a cache hit
    await kv.set("p", "k", "new")
    assert kv.get("p", "k") == (True, "new")
    assert await kv.delete("p", "k")
    assert kv.get("p", "k") == (False, None)
    await kv.set("p", "k", "again")
    assert kv.get("p", "k") == (True, "again")
    await kv.drop("p")
    assert kv.get("p", "k") == (False, None)


async def test_cached_values_are_decoded_afresh_so_a_caller_cannot_change_them(kv: PluginStorage) -> None:
    await kv.set("p", "k", {"items": [1]})
    first = kv.get("p", "k")[1]
    first["items"].append(2)
    assert kv.get("p", "k") == (True, {"items": [1]})


async def test_a_read_while_a_write_is_in_flight_is_not_cached(db: Database, kv: PluginStorage) -> None:
    await kv.set("p", "k", "old")
    held, release = threading.Event(), threading.Event()
    # Hold the writer thread so the next write sits between submission and commit.
    blocker = asyncio.ensure_future(db.write(lambda c: (held.set(), release.wait(5))))
    writing = asyncio.ensure_future(kv.set("p", "k", "new"))
    await asyncio.to_thread(held.wait, 5)  # both tasks have run their first step: the write is queued
    assert not writing.done()
    assert kv.get("p", "k") == (True, "old")  # not yet committed: the old value is the right answer
    release.set()
    await asyncio.gather(blocker, writing)
    assert kv.get("p", "k") == (True, "new")


async def test_a_cancelled_writer_still_leaves_reads_exact(db: Database, kv: PluginStorage) -> None:
    await kv.set("p", "k", "old")
    assert kv.get("p", "k") == (True, "old")
    held, release = threading.Event(), threading.Event()
    blocker = asyncio.ensure_future(db.write(lambda c: (held.set(), release.wait(5))))
    writing = asyncio.ensure_future(kv.set("p", "k", "new"))
    await asyncio.to_thread(held.wait, 5)  # the writer thread is held and the write is queued
    writing.cancel()  # the caller gives up; the write itself was already queued
    release.set()
    await blocker
    await db.write(lambda c: None)  # every write queued before this one has finished
    assert kv.get("p", "k") == (True, _stored(kv, "p", "k"))


async def test_concurrent_writers_and_a_reader_agree_with_the_database(kv: PluginStorage) -> None:
    async def writer(tag: str) -> None:
        for i in range(50):
            await kv.set("p", "k", f"{tag}{i}")

    async def reader() -> None:
        for _ in range(200):
            kv.get("p", "k")
            await asyncio.sleep(0)

    await asyncio.gather(writer("a"), writer("b"), reader())
    assert kv.get("p", "k") == (True, _stored(kv, "p", "k"))


async def test_the_sqlite_cache_stays_bounded_and_large_values_bypass_it(sqlite_db: SqliteDatabase) -> None:
    kv = PluginStorage(sqlite_db, quota_bytes=QUOTA)
    cache = kv._cache
    cache.max_entries = 8
    cache.max_value_bytes = 64
    for i in range(20):
        await kv.set("p", f"k{i}", i)
        assert kv.get("p", f"k{i}") == (True, i)
    assert len(cache) == 8
    assert all(kv.get("p", f"k{i}") == (True, i) for i in range(20))  # evicted ones come from disk
    big = "x" * (cache.max_value_bytes + 1)
    await kv.set("p", "big", big)
    before = len(cache)
    assert kv.get("p", "big") == (True, big)
    assert ("p", "big") not in cache.entries and len(cache) == before


# -- durability --------------------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from plugbox.storage.kv import PluginStorage
    from plugbox.storage.postgres import PostgresDatabase
    from plugbox.storage.sqlite import SqliteDatabase

    async def main() -> None:
        where = sys.argv[1]
        db = PostgresDatabase(where) if where.startswith("postgresql://") else SqliteDatabase(where)
        kv = PluginStorage(db)
        await kv.set("p", "k", {"acked": True})
        if sys.argv[2] == "exit":
            os._exit(0)
        print("acked", flush=True)
        time.sleep(60)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("death", ["exit", "sigkill"])
def test_acknowledged_set_survives_the_process_dying_right_after(
    make_database: Callable[[], Database], death: str
) -> None:
    database = make_database()  # creates the database; the writer process opens its own handle
    where = database.url if isinstance(database, PostgresDatabase) else str(cast(SqliteDatabase, database).path)
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, where, death], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        if death == "sigkill":
            assert proc.stdout is not None
            assert proc.stdout.readline() == "acked\n"
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == (0 if death == "exit" else -signal.SIGKILL)
    assert PluginStorage(database).get("p", "k") == (True, {"acked": True})
    assert database.integrity_check()


async def test_values_and_usage_persist_across_reopen(make_database: Callable[[], Database]) -> None:
    first = make_database()
    await PluginStorage(first).set("p", "k", [1, "two"])
    await first.close()

    kv = PluginStorage(make_database())
    assert kv.get("p", "k") == (True, [1, "two"])
    assert kv.usage("p") > 0


async def test_a_shared_database_shows_each_handle_the_others_writes_at_once(
    make_postgres_url: Callable[[], str],
) -> None:
    # Two hosts on one PostgreSQL database: neither may answer a read from a stale cache.
    url = make_postgres_url()
    one, two = PostgresDatabase(url), PostgresDatabase(url)
    try:
        kv_one, kv_two = PluginStorage(one), PluginStorage(two)
        await kv_one.set("p", "k", "first")
        assert kv_two.get("p", "k") == (True, "first")
        await kv_two.set("p", "k", "second")
        assert kv_one.get("p", "k") == (True, "second")
        assert kv_one.usage("p") == kv_two.usage("p") > 0
    finally:
        await one.close()
        await two.close()


async def test_a_plugins_quota_holds_when_two_hosts_write_for_it_at_once(make_postgres_url: Callable[[], str]) -> None:
    url = make_postgres_url()
    one, two = PostgresDatabase(url), PostgresDatabase(url)
    try:
        kvs = [PluginStorage(one, quota_bytes=QUOTA), PluginStorage(two, quota_bytes=QUOTA)]

        async def fill(i: int) -> int:
            stored = 0
            for n in range(10):
                try:
                    await kvs[i % 2].set("p", f"k{i}-{n}", "x" * 100)
                    stored += 1
                except StorageError:
                    pass
            return stored

        await asyncio.gather(*(fill(i) for i in range(4)))
        used = kvs[0].usage("p")
        assert 0 < used <= QUOTA
        keys = kvs[0].list("p")
        assert used == sum(_cost(k, len(msgspec.msgpack.encode("x" * 100))) for k in keys)
    finally:
        await one.close()
        await two.close()


def test_open_database_picks_the_backend_from_the_url(tmp_path: Path, make_postgres_url: Callable[[], str]) -> None:
    from plugbox.settings import load_settings
    from plugbox.storage.opening import open_database

    embedded = open_database(load_settings(environ={}, data_dir=str(tmp_path)))
    shared = open_database(load_settings(environ={"PLUGBOX_DATABASE_URL": make_postgres_url()}, data_dir=str(tmp_path)))
    try:
        assert (embedded.dialect, embedded.shared) == ("sqlite", False)
        assert (shared.dialect, shared.shared) == ("postgres", True)
    finally:
        embedded.close_sync()
        shared.close_sync()
    with pytest.raises(ConfigError, match="database_url"):
        open_database(load_settings(environ={}, data_dir=str(tmp_path), database_url="mysql://x"))


async def test_leases_are_held_by_one_handle_spread_fairly_and_freed_when_the_holder_goes(
    make_postgres_url: Callable[[], str],
) -> None:
    url = make_postgres_url()
    names = ["s1", "s2", "s3", "s4"]
    one, two = PostgresDatabase(url), PostgresDatabase(url)
    try:
        assert await one.acquire_leases(names) == set(names)  # alone: a fair share is everything
        assert await two.acquire_leases(names) == set()  # every lease is taken
        held_one = await one.acquire_leases(names)  # two hosts now: gives back past its half
        held_two = await two.acquire_leases(names)
        assert len(held_one) == len(held_two) == 2 and held_one.isdisjoint(held_two)
        assert await one.acquire_leases(names) == held_one  # stable once spread
        await one.close()  # its connection ends: PostgreSQL frees its locks once the backend exits
        for _round in range(50):  # a lease round every 0.1 s, 5 s at most
            if await two.acquire_leases(names) == set(names):
                break
            await asyncio.sleep(0.1)
        assert await two.acquire_leases(names) == set(names)
    finally:
        await one.close()
        await two.close()


async def test_live_hosts_are_the_named_handles_holding_a_lease_connection(
    make_postgres_url: Callable[[], str], tmp_path: Path,
) -> None:
    url = make_postgres_url()
    names = ["s1", "s2", "s3", "s4"]
    one, two = PostgresDatabase(url, host_id="host-one"), PostgresDatabase(url, host_id="host-two")
    try:
        assert one.live_hosts() == frozenset()  # no lease connection yet: not counted as up
        await one.acquire_leases(names)
        await two.acquire_leases(names)
        assert one.live_hosts() == two.live_hosts() == {"host-one", "host-two"}
        held = [await one.acquire_leases(names), await two.acquire_leases(names)]
        assert [len(h) for h in held] == [2, 2]  # named handles still count each other for the spread
        await one.close()
        for _round in range(50):  # the server drops the closed connection once its backend exits
            if two.live_hosts() == {"host-two"}:
                break
            await asyncio.sleep(0.1)
        assert two.live_hosts() == {"host-two"}
    finally:
        await one.close()
        await two.close()
    embedded = SqliteDatabase(tmp_path / "plugbox.db")
    assert embedded.live_hosts() == frozenset()  # one host is the whole system: no other is up
    await embedded.close()
