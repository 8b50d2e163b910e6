"""The persisted plugin registry: what the host must remember about each plugin across restarts
(SPEC §5): where it came from, its status and error, the operator's "enabled" choice, its config,
per-session config, active sessions and the circuit breaker's failure count.

One row per plugin in ``plugin_registry``, the record msgpack-encoded (so bytes and datetimes in
config survive). Decoding into `PluginRecord` is the validation: a row that does not decode is
reported, never half-used. Every write announces the plugin id (`Database.announce`, topic
`registry`) so hosts sharing the database re-read it. This module stores records; deciding what they
mean is the manager's job (and, across hosts, `lifecycle.cluster`'s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from plugbox.errors import DatabaseError, StorageError
from plugbox.lifecycle.status import Status
from plugbox.storage.db import Connection, Database

__all__ = ["SOURCES", "TOPIC", "PluginRecord", "Registry"]

log = logging.getLogger(__name__)

SOURCES = ("builtin", "disk")
TOPIC = "registry"  # what `put` and `delete` announce to other hosts on a shared database


class PluginRecord(msgspec.Struct, kw_only=True):
    """Everything persisted about one plugin. `enabled` is the operator's choice, re-applied on boot;
    `status` is what actually happened last time."""

    plugin_id: str
    source: str  # "builtin" | "disk"
    path: str | None = None
    status: Status = Status.INSTALLED  # stored as its string; decoding refuses any other value
    error: str | None = None
    enabled: bool = False
    config: dict[str, Any] = {}
    session_config: dict[str, dict[str, Any]] = {}
    active_sessions: list[str] = []
    consecutive_failures: int = 0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        # Runs on construction and on decode, so a bad stored row fails as a ValidationError.
        if not self.plugin_id:
            raise ValueError("plugin_id must not be empty")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")


_GET = "SELECT record FROM plugin_registry WHERE plugin_id = ?"
_ALL = "SELECT plugin_id, record FROM plugin_registry ORDER BY plugin_id"
_PUT = (
    "INSERT INTO plugin_registry (plugin_id, record) VALUES (?, ?) "
    "ON CONFLICT (plugin_id) DO UPDATE SET record = excluded.record"
)
_DELETE = "DELETE FROM plugin_registry WHERE plugin_id = ?"

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(PluginRecord)

_Records = list[PluginRecord]
T = TypeVar("T")


def _decode(plugin_id: str, blob: bytes) -> PluginRecord:
    try:
        record = _decoder.decode(blob)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"registry record of plugin {plugin_id!r} is invalid: {exc}") from exc
    if record.plugin_id != plugin_id:
        raise StorageError(f"registry record of plugin {plugin_id!r} names plugin {record.plugin_id!r}")
    return record


class Registry:
    """Load and save `PluginRecord`s. Reads run on the calling thread, writes are durable on return."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, plugin_id: str) -> PluginRecord | None:
        """The record of `plugin_id`, None if there is none; StorageError if the row is invalid."""
        row = self._db.read(lambda c: c.execute(_GET, (plugin_id,)).fetchone())
        return None if row is None else _decode(plugin_id, row[0])

    def all(self) -> _Records:
        """Every valid record, by plugin id. An invalid row is logged and left out, so one damaged
        record does not stop the host from booting the others."""
        rows = self._db.read(lambda c: c.execute(_ALL).fetchall())
        records: _Records = []
        for plugin_id, blob in rows:
            try:
                records.append(_decode(plugin_id, blob))
            except StorageError as exc:
                log.error("skipping registry record: %s", exc)
        return records

    async def put(self, record: PluginRecord) -> None:
        """Insert or replace the record of `record.plugin_id`."""
        try:
            blob = _encoder.encode(record)
        except (TypeError, OverflowError, UnicodeEncodeError) as exc:
            raise StorageError(
                f"registry record of plugin {record.plugin_id!r} cannot be stored: {exc}"
            ) from exc
        def put(c: Connection) -> None:
            c.execute(_PUT, (record.plugin_id, blob))
            self._db.announce(c, TOPIC, record.plugin_id)

        await self._write(put, record.plugin_id)

    async def delete(self, plugin_id: str) -> bool:
        """Remove the record; True if there was one."""
        def delete(c: Connection) -> bool:
            self._db.announce(c, TOPIC, plugin_id)
            return c.execute(_DELETE, (plugin_id,)).rowcount > 0

        return await self._write(delete, plugin_id)

    async def _write(self, fn: Callable[[Connection], T], plugin_id: str) -> T:
        try:
            return await self._db.write(fn)
        except DatabaseError as exc:
            raise StorageError(f"registry write for plugin {plugin_id!r} failed: {exc}") from exc
