"""The PostgreSQL backend of the storage contract (`db.Database`), for hosts that outgrow one SQLite
file or share one database (docs/postgres.md).

The same rules as the SQLite backend, kept with PostgreSQL's means:

- **writes** run on one writer thread per host, owners taking turns (`_turns`), each in one
  transaction on the write pool's connection. `write()` returns after COMMIT, and PostgreSQL's
  default `synchronous_commit = on` has flushed the WAL by then: an acknowledged write survives a
  crash of the host or of the server. Each transaction first takes a transaction-scoped advisory
  lock on its owner (`pg_advisory_xact_lock`), so the writes of one plugin are serialised across
  every host sharing the database, not only within one: a quota charge (read usage, check, add)
  stays atomic when two hosts write for the same plugin.
- **reads** run on the calling thread through a pool of read-only autocommit connections
  (`default_transaction_read_only`), so each statement sees the last commit of any host. A point
  read is one round trip on a local socket; `statement_timeout` bounds what a stuck server can
  cost the loop. **scans** run on a thread of their own, from the same pool.
- every `?` placeholder is rewritten to psycopg's `%s` once per distinct statement, so stores keep
  one SQL text for both backends.

psycopg's pool reconnects a broken connection on its next use; a driver error leaves this module as
`DatabaseError`. The schema is `migrations/postgres/`, applied at open under an advisory lock so two
hosts starting together do not both migrate. Must not import plugin, lifecycle or worker code.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import uuid
from collections.abc import Callable, Collection, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import psycopg
from psycopg_pool import ConnectionPool

from plugbox.errors import DatabaseError, StorageError
from plugbox.settings import DEFAULTS
from plugbox.storage import migrations
from plugbox.storage._turns import Job, Turns
from plugbox.storage.db import Change, Connection, Cursor
from plugbox.storage.postgres_cluster import CHANNEL, LEASE_APPLICATION, Leases, Listener, notify_payload

__all__ = ["PostgresDatabase", "lock_key"]

T = TypeVar("T")

_MIGRATION_LOCK = "plugbox:migrations"


def lock_key(name: object) -> int:
    """A stable signed 64-bit advisory lock key for `name` (the same on every host)."""
    digest = hashlib.blake2b(repr(name).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@functools.lru_cache(maxsize=1024)
def _pg_sql(sql: str) -> str:
    # psycopg's placeholder is %s, and a literal % must be doubled once parameters are passed.
    return sql.replace("%", "%%").replace("?", "%s")


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise DatabaseError(f"postgres: {exc}") from exc


_LIVE_HOSTS = (  # hosts count each other by their lease connections (postgres_cluster.Leases)
    "SELECT DISTINCT application_name FROM pg_stat_activity "
    "WHERE application_name LIKE ? AND datname = current_database()"
)


class _Conn:
    """A psycopg connection behind the contract's `Connection` (`?` placeholders)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor:
        if not params:
            return self._conn.execute(sql)  # no parameters: psycopg parses no placeholders
        return self._conn.execute(_pg_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Cursor:
        cur = self._conn.cursor()
        batch = [tuple(r) for r in rows]
        if batch:
            cur.executemany(_pg_sql(sql), batch)
        return cur


class PostgresDatabase:
    """A PostgreSQL database: a fair writer thread, a read pool for the calling thread, a scan thread.
    Keeps the `db.Database` contract."""

    dialect = "postgres"
    shared = True  # other hosts may write the same rows: no store may cache reads across calls
    skip_locked = "FOR UPDATE SKIP LOCKED"  # hosts claiming queue rows at once pass over each other's

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = DEFAULTS.database_pool_size,
        statement_timeout_ms: int = DEFAULTS.database_statement_timeout_ms,
        connect_timeout_s: float = 10.0,
        host_id: str = "",
    ) -> None:
        self.url = url
        self._closed = False
        timeout = f"-c statement_timeout={int(statement_timeout_ms)}"
        try:
            self._write_pool = ConnectionPool(
                url, min_size=1, max_size=1, open=True, timeout=connect_timeout_s, name="plugbox-write",
                kwargs={"autocommit": True, "options": timeout},
            )
            self._read_pool = ConnectionPool(
                url, min_size=1, max_size=max(1, pool_size - 1), open=True, timeout=connect_timeout_s,
                name="plugbox-read",
                kwargs={"autocommit": True, "options": f"{timeout} -c default_transaction_read_only=on"},
            )
            self._write_pool.wait(connect_timeout_s)
            self._read_pool.wait(connect_timeout_s)
        except Exception as exc:
            self._close_pools()
            raise DatabaseError(f"postgres database cannot be opened: {exc}") from exc
        self.origin = uuid.uuid4().hex  # names this handle's announcements, so it never hears itself
        self._listener: Listener | None = None
        self._leases = Leases(url, lock_key, host_id)
        self._lease_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plugbox-db-lease")
        self._turns = Turns()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plugbox-db-writer")
        self._scanner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plugbox-db-scan")
        self._scan_turns = Turns()
        try:
            self.write_sync(self._migrate)
        except BaseException:
            self.close_sync()
            raise

    @staticmethod
    def _migrate(conn: Connection) -> list[str]:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(_MIGRATION_LOCK),))
        return migrations.apply(conn, "postgres")

    def _close_pools(self) -> None:
        for name in ("_write_pool", "_read_pool"):
            pool: ConnectionPool[Any] | None = getattr(self, name, None)
            if pool is not None:
                pool.close()

    # -- writes --------------------------------------------------------------------------------------

    async def write(
        self, fn: Callable[[Connection], T], after: Callable[[], None] | None = None, *, owner: Hashable = None
    ) -> T:
        """Run `fn(conn)` in one transaction on the writer thread; return its result after COMMIT.
        Same contract as `SqliteDatabase.write`; the owner's writes are also serialised across hosts."""
        self._check_open()
        return cast(T, await self._turns.submit(Job(fn, after, owner), self._executor, self._run_job))

    def _run_job(self, job: Job) -> object:
        return self._transaction(job.fn, job.after, job.owner)

    def write_sync(self, fn: Callable[[Connection], T]) -> T:
        """`write` for synchronous callers. Blocks the calling thread."""
        self._check_open()
        return self._executor.submit(self._transaction, fn).result()

    def _transaction(
        self, fn: Callable[[Connection], T], after: Callable[[], None] | None = None, owner: Hashable = None
    ) -> T:
        try:
            with _translated(), self._write_pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(("write", owner)),))
                return fn(_Conn(conn))
        finally:
            if after is not None:
                after()

    # -- reads ---------------------------------------------------------------------------------------

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` on the calling thread on a read-only connection; each statement sees the
        last commit of any host. Keep `fn` to a few point reads: on the event loop it blocks every
        other task for its round trips."""
        self._check_open()
        with _translated(), self._read_pool.connection() as conn:
            return fn(_Conn(conn))

    async def scan(self, fn: Callable[[Connection], T], *, owner: Hashable = None) -> T:
        """Run `fn(conn)` on the scan thread on a read-only connection (listings). Scans run one at a
        time, owners taking turns (a plugin keeping many listings queued delays another's by one
        scan, not by all of them)."""
        self._check_open()
        return cast(T, await self._scan_turns.submit(Job(fn, None, owner), self._scanner, self._run_scan_job))

    def _run_scan_job(self, job: Job) -> object:
        return self._run_scan(job.fn)

    def _run_scan(self, fn: Callable[[Connection], T]) -> T:
        self._check_open()
        with _translated(), self._read_pool.connection() as conn:
            return fn(_Conn(conn))

    # -- hosts sharing the database ---------------------------------------------------------------

    def announce(self, conn: Connection, topic: str, subject: str) -> None:
        """Tell the other handles, once the caller's write commits, that `subject` of `topic` changed."""
        conn.execute("SELECT pg_notify(?, ?)", (CHANNEL, notify_payload(self.origin, topic, subject)))

    def subscribe(self, callback: Callable[[Change], None]) -> None:
        """Start telling `callback` (on the listener thread) what the other handles announce; it
        first hears `RESYNC` once listening. One subscriber per handle."""
        self._check_open()
        if self._listener is not None:
            raise StorageError("database: a change subscriber is already registered")
        self._listener = Listener(self.url, self.origin, callback)

    async def acquire_leases(self, names: Collection[str]) -> set[str]:
        """Take the free leases among `names` (advisory locks held by this handle's lease
        connection); return every name held now."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._lease_thread, self._leases.acquire, tuple(names))

    def live_hosts(self) -> frozenset[str]:
        """The host ids of the handles whose lease connection is open now (named handles only)."""
        prefix = f"{LEASE_APPLICATION}/"
        rows = self.read(lambda c: c.execute(_LIVE_HOSTS, (prefix + "%",)).fetchall())
        return frozenset(str(r[0])[len(prefix):] for r in rows)

    def integrity_check(self) -> bool:
        """True when the server answers and every migration of this version is recorded. (PostgreSQL
        checks its own pages: enable data checksums on the cluster for that.)"""
        wanted = {m.version for m in migrations.migrations(self.dialect)}
        rows = self.read(lambda c: c.execute("SELECT version FROM schema_migrations").fetchall())
        return wanted <= {int(r[0]) for r in rows}

    # -- lifecycle -----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"database {self.describe()} is closed")

    def describe(self) -> str:
        """The database's address without its password, for messages and logs."""
        try:
            info = psycopg.conninfo.conninfo_to_dict(self.url)
        except psycopg.ProgrammingError:
            return "postgres database"
        return f"postgres {info.get('dbname', '?')!s} on {info.get('host', 'local socket')!s}"

    async def close(self) -> None:
        """Finish the writes already submitted, then close the pools. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown)

    def close_sync(self) -> None:
        """`close` for synchronous callers. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._shutdown()

    def _shutdown(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._lease_thread.submit(self._leases.close).result()
        self._lease_thread.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        self._scanner.shutdown(wait=True)
        self._close_pools()
