"""The host-wide storage total (`storage_total_bytes`, `quota.Quota`): each plugin holding data may
hold min(storage_quota_bytes, total // plugins holding data), so the plugins together never pass the
total and one within its share is never refused for what the others hold. The number of plugins
holding data the total reads (`plugin_kv_holders`) stays equal to the usage rows over zero through
every path that writes them, and an older database's is filled in by its migration.

The storage contract: every test runs once per backend (SQLite and PostgreSQL, see `make_database`
in tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
import pytest

from plugbox.errors import ConfigError, StorageError
from plugbox.settings import load_settings
from plugbox.storage.conversations import ConversationStore
from plugbox.storage.db import Connection, Database
from plugbox.storage.kv import PluginStorage
from plugbox.storage.postgres import PostgresDatabase
from plugbox.storage.quota import Quota, WriteBudget, row_cost

QUOTA = 20_000
TOTAL = 30_000  # three plugins holding data: 10,000 each; two: 15,000; one: the quota
VALUE = "x" * 900


def _cost(key: str, value: str = VALUE, plugin: str = "p") -> int:
    return row_cost(len(plugin) + len(key.encode()) + len(msgspec.msgpack.encode(value)) + 8)


@pytest.fixture
def kv(any_db: Database) -> PluginStorage:
    unlimited = WriteBudget(1 << 40, 1 << 40, 0.0)
    return PluginStorage(any_db, quota_bytes=QUOTA, total_bytes=TOTAL, write_budget=unlimited)


async def _fill(kv: PluginStorage, plugin: str, *, keys: int = 100) -> StorageError | None:
    """Write keys of the plugin until one is refused; the refusal, or None if none was."""
    for n in range(keys):
        try:
            await kv.set(plugin, f"k{n:03}", VALUE)
        except StorageError as exc:
            return exc
    return None


def _total(kv: PluginStorage, plugins: list[str]) -> int:
    return sum(kv.usage(p) for p in plugins)


async def test_a_plugin_within_its_share_is_never_refused_when_others_fill_the_total(kv: PluginStorage) -> None:
    for plugin in ("victim", "hog1", "hog2"):
        await kv.set(plugin, "first", "v")  # three plugins hold data: they share the total
    for hog in ("hog1", "hog2"):
        refusal = await _fill(kv, hog)
        assert refusal is not None and "storage_total_bytes" in str(refusal) and repr(hog) in str(refusal)
        assert TOTAL // 3 - _cost("k000", plugin=hog) < kv.usage(hog) <= TOTAL // 3
    written = 0
    while kv.usage("victim") + _cost(f"k{written:03}", plugin="victim") <= TOTAL // 3:
        await kv.set("victim", f"k{written:03}", VALUE)  # never refused up to its share
        written += 1
    assert written >= 7  # ~1,400 bytes a key on disk: its whole share of 10,000
    assert _total(kv, ["victim", "hog1", "hog2"]) <= TOTAL


async def test_plugins_writing_at_once_never_pass_the_total(kv: PluginStorage) -> None:
    plugins = [f"p{i}" for i in range(5)]
    for p in plugins:
        await kv.set(p, "first", "v")
    refusals = await asyncio.gather(*(_fill(kv, p) for p in plugins))
    assert all(r is not None and "storage_total_bytes" in str(r) for r in refusals)
    assert _total(kv, plugins) <= TOTAL
    assert all(kv.usage(p) > TOTAL // 5 - _cost("k000", plugin=p) for p in plugins)  # each got its share


async def test_a_lone_plugin_is_bounded_by_its_quota_not_the_total(kv: PluginStorage) -> None:
    refusal = await _fill(kv, "alone")
    assert refusal is not None and "storage quota of plugin 'alone'" in str(refusal)
    assert QUOTA - _cost("k000", plugin="alone") < kv.usage("alone") <= QUOTA


async def test_the_refusal_names_the_setting_the_plugin_and_what_it_holds_and_writes_nothing(
    kv: PluginStorage,
) -> None:
    await kv.set("other", "k", "v")
    await _fill(kv, "hog")
    held, keys = kv.usage("hog"), kv.list("hog")
    with pytest.raises(StorageError) as caught:
        await kv.set("hog", "one-more", VALUE)
    message = str(caught.value)
    assert "storage_total_bytes" in message and "'hog'" in message and f"holds {held} bytes" in message
    assert f"share of {TOTAL // 2} bytes" in message and "2 plugins holding data" in message
    assert kv.usage("hog") == held and kv.list("hog") == keys  # nothing written
    assert kv.get("hog", "one-more") == (False, None)


async def test_dropping_a_plugins_data_releases_its_share_to_the_others(kv: PluginStorage) -> None:
    for p in ("a", "b", "c"):
        await kv.set(p, "first", "v")
    await _fill(kv, "a")
    held = kv.usage("a")
    assert held <= TOTAL // 3
    await kv.drop("c")  # uninstall: two plugins hold data now
    assert await _fill(kv, "a") is not None
    assert TOTAL // 3 < kv.usage("a") <= TOTAL // 2


async def test_deleting_keys_frees_room_within_the_share(kv: PluginStorage) -> None:
    await kv.set("other", "k", "v")
    await _fill(kv, "hog")
    await kv.delete("hog", "k000")
    await kv.set("hog", "k000", VALUE)  # the freed bytes are its own again


async def test_a_plugins_first_write_gets_its_share_even_when_the_others_fill_the_total(
    kv: PluginStorage,
) -> None:
    """The guarantee wins the first-write case (module docstring of quota.py): the others' data past
    their new, smaller share stays, but they cannot grow until it is gone."""
    await kv.set("hog2", "first", "v")
    await _fill(kv, "hog1")
    await _fill(kv, "hog2")  # two plugins, 15,000 each: the total is full
    await _fill(kv, "late")  # three now: 10,000 for the newcomer
    assert TOTAL // 3 - _cost("k000", plugin="late") < kv.usage("late") <= TOTAL // 3
    with pytest.raises(StorageError, match="storage_total_bytes"):
        await kv.set("hog1", "more", VALUE)  # past its new share: refused while the excess lasts


async def test_conversation_records_share_the_same_bounds(any_db: Database) -> None:
    quota = Quota(QUOTA, TOTAL)
    unlimited = WriteBudget(1 << 40, 1 << 40, 0.0)
    kv = PluginStorage(any_db, quota=quota, write_budget=unlimited)
    store = ConversationStore(any_db, quota=quota, write_budget=unlimited)
    await kv.set("other", "k", "v")
    await _fill(kv, "p")  # its share (15,000) is full with keys
    # a text longer than the room the last key left
    envelope = {"conversationId": "c1", "sessionId": "s", "chatId": "c", "text": "t" * 2000}
    with pytest.raises(StorageError, match="storage_total_bytes"):
        store.check_room("p", envelope)
    with pytest.raises(StorageError, match="storage_total_bytes"):
        await store.record_sent("p", envelope, "m1")
    assert store.messages("p", "c1") == []
    assert quota.refused[("p", "total")] >= 3  # the fill's last write, the check, the record


def test_the_total_must_hold_one_plugins_quota() -> None:
    with pytest.raises(ConfigError, match=r"storage_total_bytes \(1000\) must be at least storage_quota_bytes"):
        load_settings(environ={"PLUGBOX_STORAGE_TOTAL_BYTES": "1000", "PLUGBOX_STORAGE_QUOTA_BYTES": "2000"})
    assert load_settings(environ={}).storage_total_bytes == 4 << 30


async def test_two_hosts_sharing_a_database_keep_the_total(make_postgres_url: Callable[[], str]) -> None:
    url = make_postgres_url()
    one, two = PostgresDatabase(url), PostgresDatabase(url)
    try:
        quota = Quota(QUOTA, TOTAL)
        unlimited = WriteBudget(1 << 40, 1 << 40, 0.0)
        kvs = [PluginStorage(db, quota=quota, write_budget=unlimited) for db in (one, two)]
        plugins = [f"p{i}" for i in range(4)]
        for p in plugins:
            await kvs[0].set(p, "first", "v")
        # each plugin written from both hosts at once, each host for every plugin
        await asyncio.gather(*(_fill(kvs[i % 2], p) for i in range(2) for p in plugins))
        assert _total(kvs[0], plugins) <= TOTAL
        assert all(kvs[1].usage(p) > TOTAL // 4 - _cost("k000", plugin=p) for p in plugins)
    finally:
        await one.close()
        await two.close()


def _holders(db: Database) -> tuple[int, int]:
    """(the plugins holding data as the total reads them, as counted over the usage rows)."""
    return db.read(lambda c: (int(c.execute("SELECT holders FROM plugin_kv_holders").fetchone()[0]),
                              int(c.execute("SELECT count(*) FROM plugin_kv_usage WHERE bytes > 0").fetchone()[0])))


async def test_the_plugins_holding_data_are_counted_through_every_write_of_the_usage(any_db: Database) -> None:
    quota = Quota(QUOTA, TOTAL)
    unlimited = WriteBudget(1 << 40, 1 << 40, 0.0)
    kv = PluginStorage(any_db, quota=quota, write_budget=unlimited)
    store = ConversationStore(any_db, quota=quota, write_budget=unlimited, messages_per_plugin=1)
    envelope = {"conversationId": "c1", "sessionId": "s", "chatId": "c", "text": "hello"}
    assert _holders(any_db) == (0, 0)
    await kv.set("a", "k1", "v")  # a first write
    assert _holders(any_db) == (1, 1)
    await kv.set("a", "k2", VALUE)  # growth
    await kv.set("a", "k2", "v")  # shrinking, still holding
    assert _holders(any_db) == (1, 1)
    await store.record_sent("b", envelope, "m1")  # a conversation record is data too
    await store.record_sent("b", envelope, "m2")  # the rolling bound credits m1 back
    await store.set_handover("c", "ref", "bot")
    await store.upsert_mapping("d", {"conversationId": "c1", "provider": "crm", "externalId": "x",
                                     "sessionId": "s", "chatId": "c"})
    assert _holders(any_db) == (4, 4)
    with pytest.raises(StorageError, match="storage_total_bytes"):
        await kv.set("e", "big", "x" * (TOTAL // 5))  # a first write past a fifth holder's share: not counted
    assert _holders(any_db) == (4, 4)
    assert await kv.delete("a", "k1") and await kv.delete("a", "k2")  # all of a's keys: it holds nothing
    assert kv.usage("a") == 0 and _holders(any_db) == (3, 3)
    assert not await kv.delete("a", "k1")  # nothing to delete: nothing changes
    await kv.set("a", "k1", "v")  # holding again
    assert _holders(any_db) == (4, 4)
    await kv.set("b", "k", "v")  # keys beside records: one holder still
    assert _holders(any_db) == (4, 4)
    for plugin in ("b", "c"):  # uninstall drops the usage twice (keys, then records): counted once
        await kv.drop(plugin)
        await store.delete_plugin(plugin)
    assert _holders(any_db) == (2, 2)
    await store.delete_plugin("d")  # records alone
    await kv.drop("a")  # keys alone
    await kv.drop("never-wrote")
    assert _holders(any_db) == (0, 0)


async def test_an_older_database_gets_its_holders_from_its_usage(make_database: Callable[[], Database]) -> None:
    db = make_database()
    kv = PluginStorage(db, quota_bytes=QUOTA, total_bytes=TOTAL, write_budget=WriteBudget(1 << 40, 1 << 40, 0.0))
    for plugin in ("a", "b", "c"):
        await kv.set(plugin, "k", "v")
    await kv.delete("c", "k")  # a usage row at zero: not a holder

    def before_the_migration(c: Connection) -> None:  # the schema as migration 0009 left it
        c.execute("DROP TABLE plugin_kv_holders")
        c.execute("DROP INDEX ingress_dedup_expiry")
        c.execute("DELETE FROM schema_migrations WHERE version = 10")

    await db.write(before_the_migration)
    await db.close()
    reopened = make_database()
    assert _holders(reopened) == (2, 2)
    kv = PluginStorage(reopened, quota_bytes=QUOTA, total_bytes=TOTAL,
                       write_budget=WriteBudget(1 << 40, 1 << 40, 0.0))
    assert await _fill(kv, "a") is not None
    assert TOTAL // 3 < kv.usage("a") <= TOTAL // 2  # the total read the two holders


async def test_two_hosts_count_the_plugins_holding_data_exactly(make_postgres_url: Callable[[], str]) -> None:
    url = make_postgres_url()
    one, two = PostgresDatabase(url), PostgresDatabase(url)
    try:
        unlimited = WriteBudget(1 << 40, 1 << 40, 0.0)
        kvs = [PluginStorage(db, quota_bytes=QUOTA, total_bytes=None, write_budget=unlimited) for db in (one, two)]
        plugins = [f"p{i}" for i in range(12)]

        async def churn(host: int, plugin: str) -> None:  # first writes and last deletes, from both hosts
            for n in range(4):
                await kvs[host].set(plugin, f"k{host}", "v")
                await kvs[host].delete(plugin, f"k{host}")
                await kvs[host].set(plugin, f"k{host}-{n}", "v")

        await asyncio.gather(*(churn(h, p) for h in range(2) for p in plugins))
        assert _holders(one) == (12, 12)
        await asyncio.gather(*(kvs[i % 2].drop(p) for i, p in enumerate(plugins[:5])))
        assert _holders(two) == (7, 7)
    finally:
        await one.close()
        await two.close()
