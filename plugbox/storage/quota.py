"""What a plugin's stored data costs on disk, the quota that bounds it, and the rate it may write.

Three things every store that keeps plugin data (`kv`, `conversations`) charges through:

- `row_cost`: the bytes one row really takes in the SQLite file, from the B-tree layout of the file
  format (https://sqlite.org/fileformat2.html, "Cell Payload Overflow Pages"): the record's payload,
  its cell header and pointer, the free space a B-tree page keeps on average, and — for a payload
  past the page's local limit — whole overflow pages, the last one partly empty. Counting only
  key + value undercounted the file 4-22x (small rows pay per-row overhead; a value just past the
  local limit pays a whole 4 KiB overflow page). PostgreSQL is charged the same figure, so a
  plugin's quota holds the same data on either backend (its heap tuples cost about as much).
- `Quota.charge`: adds a delta to the plugin's usage row inside the caller's write transaction and
  refuses (StorageError) a growth past either bound below, so usage and data never disagree and a
  refused write changes nothing. KV keys and conversation records share the one usage row.
- the two bounds (`Quota`): the plugin's own `storage_quota_bytes`, and the host's
  `storage_total_bytes`, shared by every plugin on the database. Each plugin that holds data
  (usage > 0) is guaranteed a *reserve* R = min(storage_quota_bytes, storage_total_bytes // N), N
  the number of plugins holding data, this one included once it writes; a write that would take
  it past R is refused naming `storage_total_bytes`. Why a plain cap: the rule "grow past your
  reserve only while the sum over plugins of max(usage, R) stays within the total" counts every
  plugin holding data at R at least, and N x R is the total whenever R is under the quota, so that
  sum never leaves room to grow into (and when R is the quota, the quota refuses first). A
  guarantee that every plugin can always reach R, with stored data never evicted, means that space
  is held for it: the total is partitioned among the plugins holding data, not lent.
  N counts plugins that hold data, not the installed ones: an installed plugin that stores nothing
  leaves its share to those that do; the count follows the usage rows the charge already writes
  (no coupling to the registry, the same on both backends); deleting a plugin's data (uninstall) drops
  it from N at once and every reserve grows.
  The bound: while the set of plugins holding data stays the same, they hold at most N x R <= the
  total. A plugin's *first* write makes N one larger and every reserve smaller; it is admitted up
  to its new reserve even if the others fill the total (its guarantee), and data the others hold
  past their new reserve stays (never evicted) but can no longer grow: the sum passes the total by
  at most that excess, which only shrinks as they delete.
  N is kept, not counted: table `plugin_kv_holders` holds it in one row, changed in the same
  transaction as a usage row whenever that usage crosses zero (a first write, the delete of a
  plugin's last bytes, `drop_usage` at uninstall), by what the statement really changed (the usage
  `RETURNING` its new value), so it never drifts from the usage rows; migration 0010 filled it from
  an older database's. The cost is one read of that row per growing write. (Counting the usage
  table instead, a row per plugin, cost ~100 us a write with 1,000 plugins holding data: without it
  SQLite takes a third to a half more writes per second, tests/bench/measure_storecounts.py.)
  Several hosts on one PostgreSQL database need no extra lock: a write's decision reads only its own
  plugin's usage (the writes of one plugin are serialised across hosts by the database's per-owner
  advisory lock) and N. Two plugins writing their first bytes at once on two hosts may each count
  N one short, which is the first-write case above; the counter itself stays exact (each transition
  adds its +1 or -1 to the row's latest value). What the one row costs there: a transition holds the
  row's lock until its transaction commits, so another plugin's transition on any host waits that
  long (a commit, milliseconds); every other write only reads the row, which takes no lock. It
  cannot deadlock with the per-owner advisory lock: that lock is the first thing each write
  transaction takes, so no transaction waits for it while holding the row; and after the row a
  transaction locks only rows of its own plugin (its keys, its records), which no other transaction
  holding the row ever locks, so none waits for another while holding it.
- `WriteBudget`: a token bucket of write bytes per plugin. Each write spends its cost (at least one
  page: a tiny write still costs a page write and an fsync); a plugin in debt waits for its own
  bucket to refill before its write is queued, and one that would wait longer than the budget's
  patience is refused naming the setting. The wait is the writer's own: other plugins' writes do not
  queue behind it (the database's writer serves plugins in turn, see `db`).

This module knows the layout of no particular table; stores pass the payload sizes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from plugbox.errors import StorageError
from plugbox.settings import Settings
from plugbox.storage.db import Connection
from plugbox.totals import share

__all__ = ["PAGE_SIZE", "Quota", "WriteBudget", "drop_usage", "read_usage", "row_cost"]

PAGE_SIZE = 4096  # SQLite's default page size, which `Database` keeps

# B-trees filled by inserts in key order sit near full, by random inserts near two thirds: charge
# every page as two thirds used (never under the real file; at most 1.5x over it).
_FILL_NUM, _FILL_DEN = 3, 2
_RECORD_HEADER = 6  # a record's header: its length and one serial type per column (4-6 columns)


def _varint_len(n: int) -> int:
    return 1 if n < 0x80 else 2 if n < 0x4000 else 3 if n < 0x200000 else 4 if n < 0x10000000 else 9

_USAGE = "SELECT bytes FROM plugin_kv_usage WHERE plugin_id = ?"
_ADD_USAGE = (
    "INSERT INTO plugin_kv_usage (plugin_id, bytes) VALUES (?, ?) "
    "ON CONFLICT (plugin_id) DO UPDATE SET bytes = plugin_kv_usage.bytes + excluded.bytes RETURNING bytes"
)
_DROP_USAGE = "DELETE FROM plugin_kv_usage WHERE plugin_id = ? RETURNING bytes"
_HOLDERS = "SELECT holders FROM plugin_kv_holders WHERE id = 1"
_MOVE_HOLDERS = "UPDATE plugin_kv_holders SET holders = holders + ? WHERE id = 1"
_HELD = "SELECT plugin_id, bytes FROM plugin_kv_usage WHERE bytes > 0"


def row_cost(payload: int, *, index: bool = True, page_size: int = PAGE_SIZE) -> int:
    """Bytes one row whose columns hold `payload` bytes takes in the file: an `index` B-tree (a
    WITHOUT ROWID table or an index) or a rowid table B-tree."""
    usable = page_size
    payload += _RECORD_HEADER
    max_local = (usable - 12) * 64 // 255 - 23 if index else usable - 35
    min_local = (usable - 12) * 32 // 255 - 23
    cell_overhead = 2 + _varint_len(payload) + (0 if index else 9)  # cell pointer, size, rowid
    if payload <= max_local:
        return (payload + cell_overhead) * _FILL_NUM // _FILL_DEN
    local = min_local + (payload - min_local) % (usable - 4)
    if local > max_local:
        local = min_local
    overflow_pages = -(-(payload - local) // (usable - 4))
    return (local + cell_overhead + 4) * _FILL_NUM // _FILL_DEN + overflow_pages * page_size


def read_usage(conn: Connection, plugin_id: str) -> int:
    row = conn.execute(_USAGE, (plugin_id,)).fetchone()
    return 0 if row is None else int(row[0])


def drop_usage(conn: Connection, plugin_id: str) -> None:
    """Forget the plugin's usage (its data is being deleted in the same transaction: uninstall)."""
    for (held,) in conn.execute(_DROP_USAGE, (plugin_id,)).fetchall():
        _crossed(conn, int(held), 0)


def _crossed(conn: Connection, before: int, after: int) -> None:
    """Keep N (`plugin_kv_holders`) as a plugin's usage goes from `before` to `after` bytes."""
    if (before > 0) != (after > 0):
        conn.execute(_MOVE_HOLDERS, (1 if after > 0 else -1,))


@dataclass(slots=True)
class Quota:
    """A plugin's own byte quota and its share of the host's total (see the module docstring).
    One per host, shared by every store that charges plugin bytes; `refused` counts refusals by
    (plugin, reason), reason `quota` or `total`, for metrics and tests."""

    plugin_bytes: int
    total_bytes: int | None = None  # None: no host-wide bound (tools)
    refused: dict[tuple[str, str], int] = field(default_factory=dict)

    def reserve(self, holders: int) -> int:
        """What each of `holders` plugins holding data is guaranteed."""
        if self.total_bytes is None:
            return self.plugin_bytes
        return share(self.plugin_bytes, self.total_bytes, holders)

    def check(self, conn: Connection, plugin_id: str, delta: int, what: str) -> None:
        """Refuse (StorageError) a growth of `delta` bytes the bounds do not allow now (a check ahead
        of a write: the write's own `charge` decides)."""
        if delta <= 0:
            return
        used = read_usage(conn, plugin_id)
        grown = used + delta
        if grown > self.plugin_bytes:
            self._refuse(plugin_id, "quota",
                         f"storage quota of plugin {plugin_id!r}: {what} needs {delta} more bytes on disk, "
                         f"{used} of {self.plugin_bytes} bytes are in use")
        if self.total_bytes is None:
            return
        holders = int(conn.execute(_HOLDERS).fetchone()[0]) + (0 if used > 0 else 1)  # this one included
        reserve = self.reserve(holders)
        if grown > reserve:
            self._refuse(plugin_id, "total",
                         f"storage_total_bytes: plugin {plugin_id!r} holds {used} bytes and {what} needs {delta} "
                         f"more, past its share of {reserve} bytes: the host's {self.total_bytes} bytes over the "
                         f"{holders} plugins holding data (at most storage_quota_bytes each)")

    def charge(self, conn: Connection, plugin_id: str, delta: int, what: str) -> None:
        """Add `delta` bytes to the plugin's usage, in the caller's write transaction; a growth the
        bounds do not allow raises StorageError (and the caller's transaction rolls back)."""
        self.check(conn, plugin_id, delta, what)
        if delta:
            (after,) = conn.execute(_ADD_USAGE, (plugin_id, delta)).fetchone()
            _crossed(conn, int(after) - delta, int(after))

    def held(self, conn: Connection) -> dict[str, int]:
        """Bytes each plugin holding data holds (for metrics)."""
        return {str(p): int(b) for p, b in conn.execute(_HELD).fetchall()}

    def _refuse(self, plugin_id: str, reason: str, message: str) -> None:
        key = (plugin_id, reason)
        self.refused[key] = self.refused.get(key, 0) + 1
        raise StorageError(message)


@dataclass(slots=True)
class _Bucket:
    level: float
    at: float


class WriteBudget:
    """Per-plugin token buckets of write bytes (see the module docstring)."""

    def __init__(
        self,
        bytes_per_s: int,
        burst_bytes: int,
        max_wait_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.bytes_per_s = bytes_per_s
        self.burst_bytes = burst_bytes
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, _Bucket] = {}
        self.refused: dict[str, int] = {}  # plugin id -> writes refused, for tests and metrics
        self.waited_s: dict[str, float] = {}  # plugin id -> seconds its writes waited

    @classmethod
    def from_settings(cls, settings: Settings) -> WriteBudget:
        return cls(
            settings.storage_write_bytes_per_s,
            settings.storage_write_burst_bytes,
            settings.storage_write_max_wait_ms / 1000,
        )

    def check(self, plugin_id: str) -> None:
        """Refuse now (StorageError) if the plugin's next write would wait too long; callers check
        before they spend host CPU preparing the write."""
        self._wait(plugin_id)

    async def spend(self, plugin_id: str, nbytes: int) -> None:
        """Charge one write of `nbytes` to the plugin: wait while its bucket is in debt, or refuse."""
        bucket, wait = self._wait(plugin_id)
        bucket.level -= max(nbytes, PAGE_SIZE)
        if wait > 0:
            self.waited_s[plugin_id] = self.waited_s.get(plugin_id, 0.0) + wait
            await self._sleep(wait)

    def _wait(self, plugin_id: str) -> tuple[_Bucket, float]:
        now = self._clock()
        bucket = self._buckets.get(plugin_id)
        if bucket is None:
            bucket = self._buckets[plugin_id] = _Bucket(self.burst_bytes, now)
        bucket.level = min(self.burst_bytes, bucket.level + (now - bucket.at) * self.bytes_per_s)
        bucket.at = now
        wait = max(0.0, -bucket.level) / self.bytes_per_s
        if wait > self.max_wait_s:
            self.refused[plugin_id] = self.refused.get(plugin_id, 0) + 1
            raise StorageError(
                f"storage write budget of plugin {plugin_id!r} is spent: {self.bytes_per_s} bytes/s, burst "
                f"{self.burst_bytes} (storage_write_bytes_per_s); this write would wait {wait:.1f} s, more "
                f"than {self.max_wait_s:g} s"
            )
        return bucket, wait
