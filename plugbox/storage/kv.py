"""The per-plugin key/value store behind ``ctx.storage`` (SPEC §8).

Each plugin has its own namespace in the ``plugin_kv`` table and a byte quota. Rules:

- keys are non-empty ``str``, at most `MAX_KEY_CHARS` characters, without NUL;
- values are plain data (SPEC §3) and are stored encoded with msgpack. Everything round-trips by
  type, with one normalisation: an aware datetime comes back as the same instant **in UTC**;
- a plugin's usage is what its rows take on disk (`quota.row_cost` of plugin id + key + encoded
  value), shared with its conversation records, bounded by its quota and its share of the host's
  total (`quota.Quota`). The usage row is updated in the same transaction as the value, so the two
  never disagree; overwriting a key counts only the difference. A refused write changes nothing;
- every write is charged to the plugin's `WriteBudget` before it is queued, and queued as the
  plugin's own (`Database.write(owner=...)`), so a plugin flooding the writer waits for itself;
- `list_keys`, the listing plugins reach, runs on the database's scan thread and returns at most
  `list_max_keys` keys per call: past that the caller pages (`after`, `limit`) or is refused naming
  the cap. The key range is bounded on both sides, so a listing costs what it returns;
- a worker's value arrives encoded and is stored as it came (`set_encoded`), and handed back
  encoded (`get_encoded`): the host never builds it. One up to `check_max_bytes` is decoded and
  checked as plain data; a larger one is only known to be well-formed msgpack (its frame was
  decoded), since decoding small containers costs ~70x their bytes. Only its owner ever reads it
  back as a worker, and the host's own readers (`get`) decode with no extension type allowed.

Every refusal of input raises `StorageError` naming the key rule, the value path or the quota. This
module checks no permissions or session scope: the capability layer has done that before calling.

Reads of small values are served from a bounded in-memory cache of encoded values (`_ReadCache`):
`ctx.storage.get` is the hottest capability call, and a SQLite lookup cost more than the rest of
the host's side of the round trip. On SQLite the host process is the database's only writer, and
every write goes through this class, which keeps the cache exact (see `_ReadCache` for how). On a
shared database (PostgreSQL) other hosts write too, so the cache is off and every read asks it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from plugbox.errors import DatabaseError, PlainDataError, StorageError
from plugbox.plain import check_plain
from plugbox.protocol import value_decoder
from plugbox.settings import DEFAULTS
from plugbox.storage.db import Connection, Database
from plugbox.storage.quota import PAGE_SIZE, Quota, WriteBudget, drop_usage, read_usage, row_cost

__all__ = ["MAX_KEY_CHARS", "PluginStorage", "prefix_end"]

MAX_KEY_CHARS = 512

_GET = "SELECT value FROM plugin_kv WHERE plugin_id = ? AND key = ?"
_SIZE = "SELECT size FROM plugin_kv WHERE plugin_id = ? AND key = ?"
_UPSERT = (
    "INSERT INTO plugin_kv (plugin_id, key, value, size) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (plugin_id, key) DO UPDATE SET value = excluded.value, size = excluded.size"
)
_DELETE = "DELETE FROM plugin_kv WHERE plugin_id = ? AND key = ?"
# The prefix as a key range [prefix, prefix_end(prefix)), compared literally (LIKE would treat % and _
# as wildcards and ignore ASCII case): SQLite walks the primary key from the first match to the last
# and no further. `after` pages through a long listing.
_LIST = "SELECT key FROM plugin_kv WHERE plugin_id = ? AND key >= ? AND key > ? ORDER BY key"
_LIST_BOUNDED = "SELECT key FROM plugin_kv WHERE plugin_id = ? AND key >= ? AND key > ? AND key < ? ORDER BY key"

_encoder = msgspec.msgpack.Encoder()
_decoder = value_decoder()  # a stored value may have come from a worker, encoded

_Keys = list[str]
T = TypeVar("T")


def _check_key(key: Any) -> str:
    if type(key) is not str:
        raise StorageError(f"storage key: must be a str, got {type(key).__name__} [key.type]")
    if not key:
        raise StorageError("storage key: must not be empty [key.empty]")
    if len(key) > MAX_KEY_CHARS:
        raise StorageError(
            f"storage key: {len(key)} characters, at most {MAX_KEY_CHARS} allowed [key.length]"
        )
    if "\x00" in key:
        raise StorageError("storage key: must not contain NUL [key.nul]")
    if not key.isascii():
        _key_bytes(key)  # SQLite cannot bind a str that is not valid UTF-8
    return key


def prefix_end(prefix: str) -> str | None:
    """The least str above every str that starts with `prefix` (None: no bound, the prefix is empty
    or all U+10FFFF). SQLite compares TEXT as UTF-8 bytes, which orders like code points."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            following = last + 1 if not 0xD800 <= last + 1 <= 0xDFFF else 0xE000  # no surrogates in UTF-8
            return prefix[:-1] + chr(following)
        prefix = prefix[:-1]
    return None


def _key_bytes(key: str) -> int:
    try:
        return len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise StorageError("storage key: not valid Unicode text (lone surrogate) [key.encoding]") from None


def _encode(value: Any) -> bytes:
    try:
        check_plain(value, "value")
    except PlainDataError as exc:
        raise StorageError(f"storage value: {exc}") from exc
    try:
        return _encoder.encode(value)
    except OverflowError:
        raise StorageError("storage value: an int outside the 64-bit range cannot be stored") from None
    except UnicodeEncodeError:
        raise StorageError("storage value: a str is not valid Unicode text (lone surrogate)") from None


class _ReadCache:
    """Encoded values of recently read keys, exact with respect to committed writes.

    Writes run on the database's writer thread; reads on the calling thread. A write marks its keys
    busy from the moment its transaction starts until it has committed or rolled back, dropping them
    from the cache at both ends, and each end bumps `epoch`. A read stores what it fetched only if no
    write of that key was busy and none ended while it ran, so the cache never holds a value older
    than the last commit. Bounded by entry count and value size; the oldest entry goes first.
    """

    __slots__ = ("_busy", "_lock", "entries", "epoch", "max_entries", "max_value_bytes")

    def __init__(self, max_entries: int, max_value_bytes: int) -> None:
        self.entries: dict[tuple[str, str], bytes] = {}  # read by PluginStorage.get, without a lock
        self._busy: dict[tuple[str, str | None], int] = {}  # (plugin, None): the whole namespace
        self._lock = threading.Lock()
        self.epoch = 0
        self.max_entries = max_entries
        self.max_value_bytes = max_value_bytes

    def put(self, plugin_id: str, key: str, blob: bytes, epoch: int) -> None:
        """Store `blob`, read when `epoch` was current, unless a write may have made it stale."""
        if len(blob) > self.max_value_bytes or not self.max_entries:
            return
        with self._lock:
            if epoch != self.epoch or (plugin_id, key) in self._busy or (plugin_id, None) in self._busy:
                return
            entries = self.entries
            if len(entries) >= self.max_entries:
                del entries[next(iter(entries))]
            entries[(plugin_id, key)] = blob

    def begin(self, plugin_id: str, key: str | None) -> None:
        """Writer thread, as a transaction starts writing `key` (None: every key of the plugin)."""
        self._mark(plugin_id, key, +1)

    def end(self, plugin_id: str, key: str | None) -> None:
        """Writer thread, once that transaction has committed or rolled back."""
        self._mark(plugin_id, key, -1)

    def _mark(self, plugin_id: str, key: str | None, step: int) -> None:
        with self._lock:
            self.epoch += 1
            busy = self._busy.get((plugin_id, key), 0) + step
            if busy:
                self._busy[(plugin_id, key)] = busy
            else:
                del self._busy[(plugin_id, key)]
            if key is None:
                for cached in [k for k in self.entries if k[0] == plugin_id]:
                    del self.entries[cached]
            else:
                self.entries.pop((plugin_id, key), None)

    def __len__(self) -> int:
        return len(self.entries)


def _row_cost(plugin_id: str, key: str, blob: bytes) -> int:
    return row_cost(len(plugin_id.encode()) + _key_bytes(key) + len(blob) + 8)


class PluginStorage:
    """Namespaced, quota-bounded key/value storage for plugins, on a shared `Database`."""

    def __init__(
        self,
        db: Database,
        quota_bytes: int = DEFAULTS.storage_quota_bytes,
        *,
        cache_entries: int = DEFAULTS.storage_cache_entries,
        cache_value_max_bytes: int = DEFAULTS.storage_cache_value_max_bytes,
        write_budget: WriteBudget | None = None,
        list_max_keys: int = DEFAULTS.storage_list_max_keys,
        check_max_bytes: int = DEFAULTS.plain_decode_max_bytes,
        total_bytes: int | None = DEFAULTS.storage_total_bytes,
        quota: Quota | None = None,
    ) -> None:
        """`quota` (shared with the host's other stores) wins over `quota_bytes` and `total_bytes`."""
        if quota_bytes < 1:
            raise ValueError("quota_bytes must be positive")
        self._db = db
        self.quota = quota or Quota(quota_bytes, total_bytes)
        self.quota_bytes = self.quota.plugin_bytes
        self.write_budget = write_budget or WriteBudget.from_settings(DEFAULTS)
        self.list_max_keys = list_max_keys
        self.check_max_bytes = check_max_bytes
        # A shared database has writers in other hosts, which this cache would not see.
        self._cache = _ReadCache(0 if db.shared else cache_entries, cache_value_max_bytes)

    # -- reads: on the calling thread ----------------------------------------------------------------

    def get(self, plugin_id: str, key: str) -> tuple[bool, Any]:
        """(True, value) when `key` is stored for the plugin, else (False, None)."""
        blob = self.get_encoded(plugin_id, key)
        if blob is None:
            return False, None
        try:
            return True, _decoder.decode(blob)
        except (msgspec.DecodeError, ValueError) as exc:
            raise StorageError(
                f"storage key {key!r} of plugin {plugin_id!r}: stored value is corrupt"
            ) from exc

    def get_encoded(self, plugin_id: str, key: str) -> bytes | None:
        """The value stored under `key`, as stored (msgpack); None when there is none."""
        _check_key(key)
        cache = self._cache
        blob = cache.entries.get((plugin_id, key))
        if blob is None:
            epoch = cache.epoch
            row = self._db.read(lambda c: c.execute(_GET, (plugin_id, key)).fetchone())
            if row is None:
                return None
            blob = row[0]
            cache.put(plugin_id, key, blob, epoch)
        return blob

    def list(self, plugin_id: str, prefix: str = "") -> _Keys:
        """Every key of the plugin starting with `prefix` (taken literally), sorted by code point.
        For host tools, on the calling thread and unbounded: plugins reach `list_keys`."""
        _check_prefix(prefix)
        return self._db.read(lambda c: _keys(c, plugin_id, prefix, "", None))

    async def list_keys(
        self, plugin_id: str, prefix: str = "", *, after: str = "", limit: int | None = None
    ) -> _Keys:
        """Keys of the plugin starting with `prefix` and sorting after `after`, sorted by code point,
        off the event loop. With `limit`, at most min(limit, list_max_keys) keys (a page); without,
        all of them, or StorageError naming the cap when there are more."""
        _check_prefix(prefix)
        _check_prefix(after, "after")
        cap = self.list_max_keys
        fetch = cap + 1 if limit is None else max(1, min(limit, cap))
        keys = await self._db.scan(lambda c: _keys(c, plugin_id, prefix, after, fetch), owner=plugin_id)
        if limit is None and len(keys) > cap:
            raise StorageError(
                f"storage list: more than {cap} keys start with {prefix!r}, the most one call returns "
                f"(storage_list_max_keys); page with after=<last key> and limit"
            )
        return keys

    def usage(self, plugin_id: str) -> int:
        """Bytes the plugin uses against its quota: its keys and its conversation records on disk."""
        return self._db.read(lambda c: read_usage(c, plugin_id))

    # -- writes: on the writer thread, one transaction each ------------------------------------------

    async def set(self, plugin_id: str, key: str, value: Any) -> None:
        """Store `value` under `key`; returns once the write is durable."""
        _check_key(key)
        self.write_budget.check(plugin_id)
        await self._set(plugin_id, key, _encode(value))

    async def set_encoded(self, plugin_id: str, key: str, value: msgspec.Raw) -> None:
        """Store a value that arrived encoded (one well-formed msgpack value), as it is."""
        _check_key(key)
        self.write_budget.check(plugin_id)
        if len(value) <= self.check_max_bytes:
            try:
                check_plain(_decoder.decode(value), "value")
            except (msgspec.DecodeError, ValueError, RecursionError) as exc:  # PlainDataError is a TypeError
                raise StorageError(f"storage value: {exc}") from None
            except PlainDataError as exc:
                raise StorageError(f"storage value: {exc}") from exc
        await self._set(plugin_id, key, bytes(value))

    async def _set(self, plugin_id: str, key: str, blob: bytes) -> None:
        size = _row_cost(plugin_id, key, blob)
        quota = self.quota_bytes
        if size > quota:
            raise StorageError(
                f"storage quota of plugin {plugin_id!r}: key {key!r} with its value takes {size} bytes "
                f"on disk, more than the whole quota of {quota} bytes"
            )
        await self.write_budget.spend(plugin_id, size)

        def txn(c: Connection) -> None:
            old = c.execute(_SIZE, (plugin_id, key)).fetchone()
            self.quota.charge(c, plugin_id, size - (old[0] if old else 0), f"writing key {key!r}")
            c.execute(_UPSERT, (plugin_id, key, blob, size))

        await self._write(txn, plugin_id, "set", key)

    async def delete(self, plugin_id: str, key: str) -> bool:
        """Remove `key`; True if it existed."""
        _check_key(key)
        await self.write_budget.spend(plugin_id, PAGE_SIZE)

        def txn(c: Connection) -> bool:
            old = c.execute(_SIZE, (plugin_id, key)).fetchone()
            if old is None:
                return False
            c.execute(_DELETE, (plugin_id, key))
            self.quota.charge(c, plugin_id, -old[0], "")
            return True

        return await self._write(txn, plugin_id, "delete", key)

    async def drop(self, plugin_id: str) -> int:
        """Delete the plugin's whole namespace (uninstall); returns the number of keys removed."""

        def txn(c: Connection) -> int:
            removed = c.execute("DELETE FROM plugin_kv WHERE plugin_id = ?", (plugin_id,)).rowcount
            drop_usage(c, plugin_id)
            return int(removed)

        return await self._write(txn, plugin_id, "drop", None)

    async def _write(
        self, txn: Callable[[Connection], T], plugin_id: str, op: str, key: str | None
    ) -> T:
        cache = self._cache

        def run(c: Connection) -> T:
            cache.begin(plugin_id, key)
            return txn(c)

        try:
            return await self._db.write(run, after=lambda: cache.end(plugin_id, key), owner=plugin_id)
        except DatabaseError as exc:
            raise StorageError(f"storage {op} for plugin {plugin_id!r} failed: {exc}") from exc


def _check_prefix(prefix: Any, what: str = "prefix") -> None:
    if type(prefix) is not str:
        raise StorageError(f"storage {what}: must be a str, got {type(prefix).__name__}")
    if not prefix.isascii():
        _key_bytes(prefix)


def _keys(c: Connection, plugin_id: str, prefix: str, after: str, limit: int | None) -> _Keys:
    end = prefix_end(prefix)
    sql = _LIST if end is None else _LIST_BOUNDED
    params: tuple[Any, ...] = (plugin_id, prefix, after) if end is None else (plugin_id, prefix, after, end)
    if limit is not None:
        sql += " LIMIT ?"
        params += (limit,)
    return [r[0] for r in c.execute(sql, params)]
