"""The embedded SQLite database every host store shares.

Owns the two connections to one database file and the rule for using them:

- **writes** run on one dedicated writer thread, one at a time, each inside a single
  ``BEGIN IMMEDIATE ... COMMIT`` transaction. `write()` returns only after COMMIT, and the database runs
  WAL with ``synchronous=FULL``, so an acknowledged write has been fsynced and survives a host crash
  (or a power cut), not just a process exit.
- **reads** run on the calling thread (the event loop) through a second connection. WAL lets them run
  beside the writer without waiting for it, and a point read is a few microseconds, which is cheaper
  than a hop to a thread. Every read sees the last committed state.

This module knows nothing about what is stored: each store (`kv`, `registry`) creates its own tables
through `write_sync` at construction. It must not import plugin, lifecycle or worker code.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from plugbox.errors import StorageError
from plugbox.settings import DEFAULTS

__all__ = ["Database"]

T = TypeVar("T")

_PRAGMAS = (
    "PRAGMA foreign_keys = ON",
    # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss or an OS crash.
    "PRAGMA synchronous = FULL",
)


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


class Database:
    """One SQLite file: a serialised writer thread and a read connection for the calling thread."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = DEFAULTS.storage_busy_timeout_ms) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
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
        self._reader = _connect(self.path, self._busy_timeout_ms)
        # A read-only guard: a store bug that writes through `read` fails instead of racing the writer.
        self._reader.execute("PRAGMA query_only = ON")
        self._read_lock = threading.RLock()

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
        except BaseException:
            conn.close()
            raise
        return conn

    # -- writes --------------------------------------------------------------------------------------

    async def write(
        self, fn: Callable[[sqlite3.Connection], T], after: Callable[[], None] | None = None
    ) -> T:
        """Run `fn(conn)` in one transaction on the writer thread; return its result after COMMIT.

        Writes are serialised in submission order. If `fn` raises, the transaction is rolled back and
        the exception re-raised here. `fn` must not commit or begin transactions itself. `after`, if
        given, runs on the writer thread whenever `fn` has run, once its transaction has committed
        or rolled back.

        Cancelling the awaiting task does not stop a write that has been submitted: it still commits or
        rolls back as a whole, so a cancelled caller simply does not learn which.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, fn, after)

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`write` for synchronous callers (schema setup at construction). Blocks the calling thread."""
        self._check_open()
        return self._executor.submit(self._transaction, fn).result()

    def _transaction(self, fn: Callable[[sqlite3.Connection], T], after: Callable[[], None] | None = None) -> T:
        conn = self._writer
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

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the calling thread against the read connection and return its result.

        Each statement sees the last committed write. Keep `fn` short: on the event loop it blocks
        every other task while it runs.
        """
        with self._read_lock:
            if self._closed:
                raise StorageError(f"database {str(self.path)!r} is closed")
            return fn(self._reader)

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
        self._close_reader()

    def close_sync(self) -> None:
        """`close` for synchronous callers. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._executor.submit(self._close_writer).result()
        self._executor.shutdown(wait=True)
        self._close_reader()
