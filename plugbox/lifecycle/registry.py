"""The persisted plugin registry: what the host must remember about each plugin across restarts
(SPEC §5). Two kinds of fact, stored apart because hosts sharing a database share only the first:

- the operator's intent: where the plugin came from, the "enabled" choice, its config, per-session
  config and active sessions. One row per plugin in ``plugin_registry``, the record msgpack-encoded
  (so bytes and datetimes in config survive). Every write announces the plugin id
  (`Database.announce`, topic `registry`) so hosts sharing the database re-read it.
- what a host observed: the plugin's status, last error and the breaker's failure count. One row
  per plugin per host in ``plugin_host_status``, written by that host only and announced to nobody
  (nothing follows another host's observation; the API reads them when asked). A plugin crashing
  on one host and running on another is shown as both, never as whichever host wrote last.

Decoding is the validation: a row that does not decode is reported, never half-used. This module
stores records; deciding what they mean is the manager's job (and, across hosts,
`lifecycle.cluster`'s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from plugbox.errors import DatabaseError, StorageError
from plugbox.lifecycle.status import Status
from plugbox.storage.db import Connection, Database

__all__ = ["SOURCES", "TOPIC", "HostStatus", "PluginRecord", "Registry"]

log = logging.getLogger(__name__)

SOURCES = ("builtin", "disk")
TOPIC = "registry"  # what `put` and `delete` announce to other hosts on a shared database


class PluginRecord(msgspec.Struct, kw_only=True):
    """Everything the host keeps about one plugin. `enabled` is the operator's choice, re-applied on
    boot. `status`, `error` and `consecutive_failures` are this host's observation: stored per host
    (`HostStatus`), blank in the shared row (only rows written before per-host status carry them)."""

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


class HostStatus(msgspec.Struct, kw_only=True, frozen=True):
    """What one host last recorded of one plugin."""

    host: str
    status: Status
    error: str | None
    consecutive_failures: int
    updated_at: float  # epoch seconds, by that host's clock


_GET = "SELECT record FROM plugin_registry WHERE plugin_id = ?"
_ALL = "SELECT plugin_id, record FROM plugin_registry ORDER BY plugin_id"
_PUT = (
    "INSERT INTO plugin_registry (plugin_id, record) VALUES (?, ?) "
    "ON CONFLICT (plugin_id) DO UPDATE SET record = excluded.record"
)
_DELETE = "DELETE FROM plugin_registry WHERE plugin_id = ?"
_OBSERVE = (
    "INSERT INTO plugin_host_status (plugin_id, host_id, status, error, consecutive_failures, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (plugin_id, host_id) DO UPDATE SET status = excluded.status, "
    "error = excluded.error, consecutive_failures = excluded.consecutive_failures, updated_at = excluded.updated_at"
)
_HOSTS = (
    "SELECT host_id, status, error, consecutive_failures, updated_at FROM plugin_host_status "
    "WHERE plugin_id = ? ORDER BY host_id"
)
_OWN = _HOSTS.replace("ORDER BY host_id", "AND host_id = ?")
_DELETE_HOSTS = "DELETE FROM plugin_host_status WHERE plugin_id = ?"
_HOST_FIELDS = ("host", "status", "error", "consecutive_failures", "updated_at")

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(PluginRecord)

_Records = list[PluginRecord]
T = TypeVar("T")


def _host_status(plugin_id: str, row: Any) -> HostStatus | None:
    try:
        return msgspec.convert(dict(zip(_HOST_FIELDS, row, strict=True)), HostStatus)
    except msgspec.ValidationError as exc:
        log.error("skipping the status of plugin %r on host %r: %s", plugin_id, row[0], exc)
        return None


def _decode(plugin_id: str, blob: bytes) -> PluginRecord:
    try:
        record = _decoder.decode(blob)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"registry record of plugin {plugin_id!r} is invalid: {exc}") from exc
    if record.plugin_id != plugin_id:
        raise StorageError(f"registry record of plugin {plugin_id!r} names plugin {record.plugin_id!r}")
    return record


class Registry:
    """Load and save `PluginRecord`s, as host `host_id`. Reads run on the calling thread, writes are
    durable on return."""

    def __init__(self, db: Database, host_id: str) -> None:
        self._db = db
        self.host_id = host_id

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

    def observed(self, plugin_id: str) -> HostStatus | None:
        """What this host last recorded of `plugin_id`; None if nothing (or an invalid row)."""
        row = self._db.read(lambda c: c.execute(_OWN, (plugin_id, self.host_id)).fetchone())
        return None if row is None else _host_status(plugin_id, row)

    def hosts(self, plugin_id: str) -> list[HostStatus]:
        """What every host last recorded of `plugin_id`, by host id (this one's included)."""
        rows = self._db.read(lambda c: c.execute(_HOSTS, (plugin_id,)).fetchall())
        return [status for row in rows if (status := _host_status(plugin_id, row)) is not None]

    async def put(self, record: PluginRecord) -> None:
        """Store the operator's intent in `record` (announced) and this host's observation of it,
        in one transaction."""
        # The shared row carries no observation: a host reading it (at boot) must not take another
        # host's crash for its own.
        intent = msgspec.structs.replace(record, status=Status.INSTALLED, error=None, consecutive_failures=0)
        try:
            blob = _encoder.encode(intent)
        except (TypeError, OverflowError, UnicodeEncodeError) as exc:
            raise StorageError(
                f"registry record of plugin {record.plugin_id!r} cannot be stored: {exc}"
            ) from exc
        observation = self._observation(record)

        def put(c: Connection) -> None:
            c.execute(_PUT, (record.plugin_id, blob))
            c.execute(_OBSERVE, observation)
            self._db.announce(c, TOPIC, record.plugin_id)

        await self._write(put, record.plugin_id)

    async def observe(self, record: PluginRecord) -> None:
        """Store this host's observation in `record` (status, error, failure count) and nothing of
        the operator's intent: another host's newer config or enabled choice is not overwritten."""
        observation = self._observation(record)
        await self._write(lambda c: c.execute(_OBSERVE, observation), record.plugin_id)

    def _observation(self, record: PluginRecord) -> tuple[Any, ...]:
        return (record.plugin_id, self.host_id, str(record.status), record.error, record.consecutive_failures,
                record.updated_at)

    async def delete(self, plugin_id: str) -> bool:
        """Remove the record and every host's observation of it; True if there was a record."""
        def delete(c: Connection) -> bool:
            self._db.announce(c, TOPIC, plugin_id)
            c.execute(_DELETE_HOSTS, (plugin_id,))
            return c.execute(_DELETE, (plugin_id,)).rowcount > 0

        return await self._write(delete, plugin_id)

    async def _write(self, fn: Callable[[Connection], T], plugin_id: str) -> T:
        try:
            return await self._db.write(fn)
        except DatabaseError as exc:
            raise StorageError(f"registry write for plugin {plugin_id!r} failed: {exc}") from exc
