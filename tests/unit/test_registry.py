"""The persisted plugin registry (SPEC §5): records survive restarts and are validated on load."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from plugbox.errors import StorageError
from plugbox.lifecycle.registry import PluginRecord, Registry
from plugbox.storage.db import Database


@pytest.fixture
def db(any_db: Database) -> Database:
    return any_db  # every test runs on both backends


@pytest.fixture
def registry(db: Database) -> Registry:
    return Registry(db)


def _record(plugin_id: str = "echo", **fields: object) -> PluginRecord:
    return PluginRecord(plugin_id=plugin_id, source="disk", path=f"/plugins/{plugin_id}", **fields)  # type: ignore[arg-type]


async def test_put_then_get_returns_an_equal_record(registry: Registry) -> None:
    record = _record(
        status="enabled",
        enabled=True,
        config={"greeting": "hi", "raw": b"\x01"},
        session_config={"main": {"greeting": "yo"}},
        active_sessions=["main"],
        consecutive_failures=2,
        updated_at=12.5,
    )
    await registry.put(record)
    assert registry.get("echo") == record


def test_get_of_an_unknown_plugin_is_none(registry: Registry) -> None:
    assert registry.get("nope") is None


async def test_put_replaces_the_previous_record(registry: Registry) -> None:
    await registry.put(_record(status="installed"))
    await registry.put(_record(status="error", error="worker crashed"))
    record = registry.get("echo")
    assert record is not None and (record.status, record.error) == ("error", "worker crashed")
    assert len(registry.all()) == 1


async def test_all_lists_every_record_by_plugin_id(registry: Registry) -> None:
    for plugin_id in ("zeta", "alpha", "mid"):
        await registry.put(_record(plugin_id))
    assert [r.plugin_id for r in registry.all()] == ["alpha", "mid", "zeta"]


async def test_delete_removes_the_record_and_reports_whether_it_existed(registry: Registry) -> None:
    await registry.put(_record())
    assert await registry.delete("echo") is True
    assert await registry.delete("echo") is False
    assert registry.get("echo") is None


async def test_records_survive_reopening_the_database(make_database: Callable[[], Database]) -> None:
    first = make_database()
    await Registry(first).put(_record(enabled=True, active_sessions=["s1"]))
    await first.close()
    assert Registry(make_database()).get("echo") == _record(enabled=True, active_sessions=["s1"])


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
