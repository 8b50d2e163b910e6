"""The storage contract: what every host store (`kv`, `conversations`, `registry`, webhooks) may ask
of a database. `opening.open_database` picks the backend from the settings; this module imports
neither backend.

Two implementations keep the contract: `SqliteDatabase` (`sqlite.py`, the embedded default, one
host) and `PostgresDatabase` (`postgres.py`, selected by `database_url = postgresql://...`, which
several hosts may share). The rules every implementation keeps, and the contract test suite checks
on both (tests/unit/test_storage_contract.py):

- `write(fn)` runs `fn(conn)` in one transaction off the event loop and returns after COMMIT, so an
  acknowledged write is durable. Writes of one `owner` (a plugin id) run in submission order and
  owners take turns; on a shared database the writes of one owner are also serialised across hosts,
  so a read-check-write (a quota charge) is atomic cluster-wide.
- `read(fn)` runs a short point read on the calling thread and sees every committed write; `scan(fn)`
  runs a read whose cost the caller controls on a thread of its own, owners taking turns as writes do.
- `fn` gets a `Connection`: `execute(sql, params)` with `?` placeholders, in the SQL both backends
  share (stores write no `if backend ==`; what differs lives in each backend's migrations, under
  `migrations/<dialect>/`). A driver error surfaces as `DatabaseError`; a `StorageError` raised by
  `fn` itself rolls the transaction back and reaches the caller unchanged.
- `shared` says whether other processes may write the same data (PostgreSQL): a store must then not
  cache reads across calls.
- `skip_locked` ends the SELECT of a claim (a write that marks queue rows as this host's): on
  PostgreSQL `FOR UPDATE SKIP LOCKED`, so hosts claiming at once each get other rows instead of
  waiting for (or taking) each other's; on SQLite empty, one writer having nothing to skip.
- `announce(conn, topic, subject)` inside a write tells every OTHER handle on the database, once the
  write commits, that `subject` (a plugin id) of `topic` changed; `subscribe(callback)` is told
  those `Change`s (on a thread of the backend's, within ~1 s of the commit), and a `Change` with
  topic `RESYNC` whenever announcements may have been missed (the listener reconnected). On SQLite,
  one host is the whole system: both do nothing.
- `acquire_leases(names)` returns the names this handle holds a lease on now, taking the free ones:
  at most one handle holds a name at a time, and a name held by a handle whose process died is free
  again shortly after. On SQLite the one host holds every name.
- `live_hosts()` names the hosts whose handle holds its lease connection open now (PostgreSQL: read
  from the server's list of connections, so a host that died drops out as soon as the server notices).
  On SQLite, empty: no other host, and the one host is not named by its database.

This module must not import a driver: `sqlite3` and `psycopg` stay inside their backends.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = ["RESYNC", "Change", "Connection", "Cursor", "Database"]

T = TypeVar("T")

RESYNC = "*"


@dataclass(frozen=True, slots=True)
class Change:
    """Another host changed `subject` of `topic` (e.g. "registry", a plugin id)."""

    topic: str
    subject: str


class Cursor(Protocol):
    """The part of a DB-API cursor the stores use."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


class Connection(Protocol):
    """A connection inside a transaction (writes) or a read-only one (reads, scans); `?` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Cursor: ...


class Database(Protocol):
    """One database as the host stores see it (see the module docstring for the rules)."""

    dialect: str  # "sqlite" | "postgres": names the migrations directory, for tools and docs
    shared: bool
    skip_locked: str  # "FOR UPDATE SKIP LOCKED" | "": see the module docstring

    async def write(
        self, fn: Callable[[Connection], T], after: Callable[[], None] | None = None, *, owner: Hashable = None
    ) -> T: ...

    def write_sync(self, fn: Callable[[Connection], T]) -> T: ...

    def read(self, fn: Callable[[Connection], T]) -> T: ...

    async def scan(self, fn: Callable[[Connection], T], *, owner: Hashable = None) -> T: ...

    def integrity_check(self) -> bool: ...

    def announce(self, conn: Connection, topic: str, subject: str) -> None: ...

    def subscribe(self, callback: Callable[[Change], None]) -> None: ...

    async def acquire_leases(self, names: Collection[str]) -> set[str]: ...

    def live_hosts(self) -> frozenset[str]: ...

    async def close(self) -> None: ...

    def close_sync(self) -> None: ...

