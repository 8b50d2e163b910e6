"""The embedded SQLite backend of the storage contract (`db.Database`), the default.

Owns the two connections to one database file and the rule for using them:

- **writes** run on one dedicated writer thread, one at a time, each inside a single
  ``BEGIN IMMEDIATE ... COMMIT`` transaction. `write()` returns only after COMMIT, and the database runs
  WAL with ``synchronous=FULL``, so an acknowledged write has been fsynced and survives a host crash
  (or a power cut), not just a process exit. Each write names its `owner` (a plugin id; None for the
  host): the writer serves owners in turn, each owner's writes in submission order, so one plugin's
  queue of large writes delays another plugin's write by at most one write, not by the whole queue.
- **reads** run on the calling thread (the event loop) through a second connection. WAL lets them run
  beside the writer without waiting for it, and a point read is a few microseconds, which is cheaper
  than a hop to a thread. Every read sees the last committed state.
- **scans** (reads whose cost grows with what a plugin stored) run on a third connection in a thread
  of their own (`scan`), so their cost lands on the caller's await, not on the event loop.

This module knows nothing about what is stored: the schema is `migrations/sqlite/`, applied at open.
A `sqlite3.Error` leaves it as `DatabaseError`. It must not import plugin, lifecycle or worker code.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar, cast

from plugbox.errors import DatabaseError, StorageError
from plugbox.settings import DEFAULTS
from plugbox.storage import migrations
from plugbox.storage._turns import Job, Turns
from plugbox.storage.db import Change, Connection

__all__ = ["SqliteDatabase"]

T = TypeVar("T")

_PRAGMAS = (
    "PRAGMA foreign_keys = ON",
    # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss or an OS crash.
    "PRAGMA synchronous = FULL",
)
# SQLite's automatic checkpoint runs inside whichever COMMIT crosses its threshold, so a plugin's
# small write would pay for copying another plugin's megabytes into the database file. The writer
# checkpoints itself instead, right after the write that left the WAL past `CHECKPOINT_WAL_BYTES`,
# and that write's owner waits for it. journal_size_limit truncates the WAL when it restarts, so its
# file size tells how much is waiting.
CHECKPOINT_WAL_BYTES = 4 << 20
_WRITER_PRAGMAS = ("PRAGMA wal_autocheckpoint = 0", "PRAGMA journal_size_limit = 0")


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise DatabaseError(f"sqlite: {exc}") from exc


def _connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module issues no implicit BEGIN; `write` owns the transaction.
    # check_same_thread=False: the writer connection is used only by the writer thread, the read
    # connection under `_read_lock`; Python's default check would reject the close from another thread.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=256)
    # busy_timeout: how long a connection waits on a lock held by another connection (another process
    # opening the same file, or a checkpoint). In WAL mode readers almost never wait; the writer
    # thread is the only writer.
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    return conn


class SqliteDatabase:
    """One SQLite file: a fair, serialised writer thread, a read connection for the calling thread,
    and a scan thread. Keeps the `db.Database` contract."""

    dialect = "sqlite"
    shared = False  # one host process is the file's only writer
    skip_locked = ""  # one writer thread: no claim can race another

    def __init__(self, path: str | Path, busy_timeout_ms: int = DEFAULTS.storage_busy_timeout_ms) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._wal_path = Path(f"{path}-wal")
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise StorageError(
                f"database path {str(path)!r}: a file path is required (two connections share it)"
            )
        self._ensure_file(self.path)
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plugbox-db-writer")
        try:
            self._writer: sqlite3.Connection = self._executor.submit(self._open_writer).result()
        except sqlite3.Error as exc:
            self._executor.shutdown(wait=False)
            raise StorageError(f"database {str(self.path)!r} cannot be opened: {exc}") from exc
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        self._turns = Turns()
        self._reader = _connect(self.path, self._busy_timeout_ms)
        # A read-only guard: a store bug that writes through `read` fails instead of racing the writer.
        self._reader.execute("PRAGMA query_only = ON")
        self._read_lock = threading.RLock()
        self._scanner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plugbox-db-scan")
        self._scan_turns = Turns()
        self._scan_conn: sqlite3.Connection | None = None  # opened on the scan thread, on first use
        try:
            self.write_sync(lambda c: migrations.apply(c, self.dialect))
        except BaseException:
            self.close_sync()
            raise

    @staticmethod
    def _ensure_file(path: Path) -> None:
        # The database holds plugin config (secrets included) and plugin data: private to the host user.
        # SQLite gives the -wal and -shm files the mode of the database file.
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StorageError(f"database {str(path)!r} cannot be created: {exc.strerror}") from exc

    def _open_writer(self) -> sqlite3.Connection:
        conn = _connect(self.path, self._busy_timeout_ms)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(
                    f"database {str(self.path)!r}: cannot switch to WAL journal mode (got {mode!r})"
                )
            for pragma in _WRITER_PRAGMAS:
                conn.execute(pragma)
        except BaseException:
            conn.close()
            raise
        return conn

    # -- writes --------------------------------------------------------------------------------------

    async def write(
        self,
        fn: Callable[[Connection], T],
        after: Callable[[], None] | None = None,
        *,
        owner: Hashable = None,
    ) -> T:
        """Run `fn(conn)` in one transaction on the writer thread; return its result after COMMIT.

        Writes of one `owner` run in submission order; owners with writes pending take turns. If `fn`
        raises, the transaction is rolled back and the exception re-raised here. `fn` must not commit
        or begin transactions itself. `after`, if given, runs on the writer thread whenever `fn` has
        run, once its transaction has committed or rolled back.

        Cancelling the awaiting task before the write starts drops it; once started it still commits
        or rolls back as a whole, so a cancelled caller simply does not learn which.
        """
        self._check_open()
        return cast(T, await self._turns.submit(Job(fn, after, owner), self._executor, self._run_job,
                                                then=self._checkpoint_if_due))

    def _run_job(self, job: Job) -> object:
        return self._transaction(job.fn, job.after)

    def _checkpoint_if_due(self) -> None:
        try:
            due = os.stat(self._wal_path).st_size > CHECKPOINT_WAL_BYTES
        except OSError:
            return
        if due:
            # PASSIVE: never waits for readers; what it cannot copy now, a later write's turn will.
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def write_sync(self, fn: Callable[[Connection], T]) -> T:
        """`write` for synchronous callers (schema setup at construction). Blocks the calling thread."""
        self._check_open()
        return self._executor.submit(self._transaction, fn).result()

    def _transaction(self, fn: Callable[[Connection], T], after: Callable[[], None] | None = None) -> T:
        conn = self._writer
        try:
            with _translated():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        finally:
            if after is not None:
                after()
        return result

    # -- reads ---------------------------------------------------------------------------------------

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` on the calling thread against the read connection and return its result.

        Each statement sees the last committed write. Keep `fn` short: on the event loop it blocks
        every other task while it runs.
        """
        with self._read_lock:
            if self._closed:
                raise StorageError(f"database {str(self.path)!r} is closed")
            with _translated():
                return fn(self._reader)

    async def scan(self, fn: Callable[[Connection], T], *, owner: Hashable = None) -> T:
        """Run `fn(conn)` on the scan thread against its own read connection; for reads whose cost
        the caller controls (listing a plugin's keys). Scans run one at a time, owners taking turns
        (a plugin keeping many listings queued delays another's by one scan, not by all of them)."""
        self._check_open()
        return cast(T, await self._scan_turns.submit(Job(fn, None, owner), self._scanner, self._run_scan_job))

    def _run_scan_job(self, job: Job) -> object:
        return self._run_scan(job.fn)

    def _run_scan(self, fn: Callable[[Connection], T]) -> T:
        self._check_open()
        if self._scan_conn is None:
            self._scan_conn = _connect(self.path, self._busy_timeout_ms)
            self._scan_conn.execute("PRAGMA query_only = ON")
        with _translated():
            return fn(self._scan_conn)

    def _close_scanner(self) -> None:
        if self._scan_conn is not None:
            self._scan_conn.close()
            self._scan_conn = None

    def announce(self, conn: Connection, topic: str, subject: str) -> None:
        """Nothing to do: no other host shares the file."""

    def subscribe(self, callback: Callable[[Change], None]) -> None:
        """Nothing to do: no other host shares the file."""

    async def acquire_leases(self, names: Collection[str]) -> set[str]:
        """Every name: this host is the only one."""
        return set(names)

    def live_hosts(self) -> frozenset[str]:
        """None: no other host shares the file."""
        return frozenset()

    def integrity_check(self) -> bool:
        """True when SQLite's full integrity check finds nothing wrong."""
        rows = self.read(lambda c: c.execute("PRAGMA integrity_check").fetchall())
        return len(rows) == 1 and rows[0][0] == "ok"

    # -- lifecycle -----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"database {str(self.path)!r} is closed")

    def _close_writer(self) -> None:
        self._writer.close()

    def _close_reader(self) -> None:
        with self._read_lock:
            self._closed = True
            self._reader.close()

    async def close(self) -> None:
        """Finish the writes already submitted, then close both connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True  # refuse new writes; queued ones still run (the executor is FIFO)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_writer)
        self._executor.shutdown(wait=True)
        await loop.run_in_executor(self._scanner, self._close_scanner)
        self._scanner.shutdown(wait=True)
        self._close_reader()

    def close_sync(self) -> None:
        """`close` for synchronous callers. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._executor.submit(self._close_writer).result()
        self._executor.shutdown(wait=True)
        self._scanner.submit(self._close_scanner).result()
        self._scanner.shutdown(wait=True)
        self._close_reader()
