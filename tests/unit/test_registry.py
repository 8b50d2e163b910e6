"""The persisted plugin registry (SPEC §5): records survive restarts and are validated on load; the
operator's intent is one row per plugin, what each host observed (status, error, failure count) one
row per plugin per host."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from plugbox.errors import StorageError
from plugbox.lifecycle.registry import HostStatus, PluginRecord, Registry
from plugbox.lifecycle.status import Status
from plugbox.storage.db import Database


@pytest.fixture
def db(any_db: Database) -> Database:
    return any_db  # every test runs on both backends


@pytest.fixture
def registry(db: Database) -> Registry:
    return Registry(db, "host-a")


def _record(plugin_id: str = "echo", **fields: object) -> PluginRecord:
    return PluginRecord(plugin_id=plugin_id, source="disk", path=f"/plugins/{plugin_id}", **fields)  # type: ignore[arg-type]


async def test_put_stores_the_intent_in_the_record_and_the_observation_as_this_hosts(registry: Registry) -> None:
    record = _record(
        status="enabled",
        error=None,
        enabled=True,
        config={"greeting": "hi", "raw": b"\x01"},
        session_config={"main": {"greeting": "yo"}},
        active_sessions=["main"],
        consecutive_failures=2,
        updated_at=12.5,
    )
    await registry.put(record)
    assert registry.get("echo") == msgspec.structs.replace(record, status="installed", consecutive_failures=0)
    assert registry.observed("echo") == HostStatus(host="host-a", status=Status.ENABLED, error=None,
                                                   consecutive_failures=2, updated_at=12.5)


async def test_observations_are_kept_per_host_and_never_overwrite_each_other(db: Database) -> None:
    a, b = Registry(db, "host-a"), Registry(db, "host-b")
    await a.put(_record(enabled=True, status="error", error="worker crashed", consecutive_failures=3, updated_at=5.0))
    await b.observe(_record(status="enabled", updated_at=6.0))
    await a.observe(_record(status="error", error="worker crashed again", updated_at=7.0))

    assert [(h.host, h.status, h.error) for h in b.hosts("echo")] == [
        ("host-a", "error", "worker crashed again"), ("host-b", "enabled", None)]
    own = b.observed("echo")
    assert own is not None and (own.status, own.error, own.updated_at) == ("enabled", None, 6.0)
    assert b.observed("other") is None


async def test_observe_leaves_the_operators_intent_as_another_host_stored_it(db: Database) -> None:
    a, b = Registry(db, "host-a"), Registry(db, "host-b")
    await a.put(_record(enabled=True, config={"greeting": "new"}))
    # host-b still holds the old config in memory when its plugin crashes
    await b.observe(_record(enabled=False, config={"greeting": "old"}, status="error", error="crash"))
    stored = a.get("echo")
    assert stored is not None and stored.enabled and stored.config == {"greeting": "new"}


def test_get_of_an_unknown_plugin_is_none(registry: Registry) -> None:
    assert registry.get("nope") is None


async def test_put_replaces_the_previous_record(registry: Registry) -> None:
    await registry.put(_record(status="installed", config={"greeting": "hi"}))
    await registry.put(_record(status="error", error="worker crashed", config={"greeting": "yo"}))
    record, observed = registry.get("echo"), registry.observed("echo")
    assert record is not None and record.config == {"greeting": "yo"}
    assert observed is not None and (observed.status, observed.error) == ("error", "worker crashed")
    assert len(registry.all()) == 1 and len(registry.hosts("echo")) == 1


async def test_all_lists_every_record_by_plugin_id(registry: Registry) -> None:
    for plugin_id in ("zeta", "alpha", "mid"):
        await registry.put(_record(plugin_id))
    assert [r.plugin_id for r in registry.all()] == ["alpha", "mid", "zeta"]


async def test_delete_removes_the_record_and_every_hosts_status_and_reports_whether_it_existed(
    db: Database, registry: Registry
) -> None:
    await registry.put(_record())
    await Registry(db, "host-b").observe(_record(status="enabled"))
    assert await registry.delete("echo") is True
    assert await registry.delete("echo") is False
    assert registry.get("echo") is None and registry.hosts("echo") == []


async def test_records_survive_reopening_the_database(make_database: Callable[[], Database]) -> None:
    first = make_database()
    await Registry(first, "host-a").put(_record(enabled=True, active_sessions=["s1"], status="disabled"))
    await first.close()
    again = Registry(make_database(), "host-a")
    assert again.get("echo") == _record(enabled=True, active_sessions=["s1"])
    observed = again.observed("echo")
    assert observed is not None and observed.status == "disabled"


def test_defaults_are_not_shared_between_records() -> None:
    a, b = _record("a"), _record("b")
    a.config["x"] = 1
    a.active_sessions.append("s")
    assert b.config == {} and b.active_sessions == []


@pytest.mark.parametrize("fields", [{"status": "running"}, {"source": "internet"}, {"plugin_id": ""}])
def test_record_with_an_unknown_status_source_or_empty_id_is_refused(fields: dict[str, str]) -> None:
    doc = {"plugin_id": "echo", "source": "disk", **fields}
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(doc, PluginRecord)


async def test_invalid_stored_row_fails_get_and_is_logged_and_skipped_by_all(
    db: Database, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    await registry.put(_record("good"))
    bad = msgspec.msgpack.encode({"plugin_id": "bad", "source": "disk", "status": "running"})
    await db.write(lambda c: c.execute("INSERT INTO plugin_registry VALUES (?, ?)", ("bad", bad)).close())
    with pytest.raises(StorageError, match="'bad' is invalid"):
        registry.get("bad")
    assert [r.plugin_id for r in registry.all()] == ["good"]
    assert "registry record of plugin 'bad' is invalid" in caplog.text


async def test_row_whose_record_names_another_plugin_is_refused(db: Database, registry: Registry) -> None:
    blob = msgspec.msgpack.encode(_record("other"))
    await db.write(lambda c: c.execute("INSERT INTO plugin_registry VALUES (?, ?)", ("echo", blob)).close())
    with pytest.raises(StorageError, match="names plugin 'other'"):
        registry.get("echo")


async def test_an_invalid_host_status_row_is_logged_and_skipped(
    db: Database, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    await registry.observe(_record(status="enabled"))
    row = ("echo", "host-z", "running", None, 0, 1.0)
    await db.write(lambda c: c.execute("INSERT INTO plugin_host_status VALUES (?, ?, ?, ?, ?, ?)", row).close())
    assert [h.host for h in registry.hosts("echo")] == ["host-a"]
    assert "skipping the status of plugin 'echo' on host 'host-z'" in caplog.text
