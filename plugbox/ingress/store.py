"""The ingress tables: the durable queue of async ingress deliveries and the `dedupOn` keys, in the host's
database (the keys and their bounds are `dedup`; this store runs them in its transactions). SQL only
(plain SQL that SQLite and PostgreSQL both speak: `ON CONFLICT DO NOTHING`, window functions, no
rowid); no hooks, no plugins, no retry policy.

Like the webhook queue (`plugbox.webhooks.store`), every change goes through `Database.write` (the one
writer thread, one fsynced transaction each, writes taken in turns per plugin), so a delivery `enqueue`
has returned for is on disk before the sender hears 202. A delivery is one row from enqueue to its end;
its state is `pending` (waiting or being handed to the plugin), `delivered` or `dead` (the dead-letter
list). On a host's own SQLite file nothing marks a row "in flight" on disk: a host that dies during an
attempt finds it `pending` again and attempts it again under the same id.

On a database several hosts share, a host hands over only the rows it has claimed (`claim_due`, in one
write: pick the due rows as `due` does, then mark those no other host is claiming at that instant,
`Database.skip_locked`). A claim names this store (`holder`), lasts `claim_s` unless renewed, and
ends with the outcome, which only its holder (or nobody, once it lapsed) records. So while hosts
live each delivery is handed over by one host at a time; the claims of a host that died lapse, and
another host hands those deliveries over again under the same id.

Bounds are checked in the same transaction as the insert, per plugin and per route, so the depth a
flood can reach is the flooded plugin's own; the dedup key of a refused delivery is not kept. Many
plugins at their own bounds together would multiply them, so the bytes held host-wide have a bound
too (`host_bytes_max`), shared fairly: once the host holds that much, a plugin holding its fair share
(the bound over the plugins holding any) or more is refused (`host_full`), while one holding less is
still admitted. The host then holds at most twice the bound, and a quiet plugin is never refused
because its neighbours filled the disk.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence

import msgspec

from plugbox.ingress.dedup import DedupKey, DedupKeys, Evictions
from plugbox.settings import DEFAULTS
from plugbox.storage import claims
from plugbox.storage.db import Connection, Database

__all__ = ["DEAD", "DELIVERED", "PENDING", "STATES", "DedupKey", "Delivery", "Enqueued", "IngressStore", "NewDelivery"]

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATES = (PENDING, DELIVERED, DEAD)

_COLUMNS = ("id", "plugin_id", "instance_id", "route", "request", "state", "attempts", "next_at", "last_status",
            "last_error", "created_at", "updated_at")
_SELECT = ", ".join(_COLUMNS)


class NewDelivery(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    plugin_id: str
    instance_id: str
    route: str
    request: bytes  # msgpack of the request dict the handler receives


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One row. `request` is empty once delivered."""

    id: str
    plugin_id: str
    instance_id: str
    route: str
    request: bytes
    state: str
    attempts: int
    next_at: float
    last_status: int | None
    last_error: str | None
    created_at: float
    updated_at: float


class Enqueued(msgspec.Struct, frozen=True):
    """What `enqueue` came to: `queued` (id is the new delivery's), `duplicate` (id is the delivery the
    key was first seen with, None for a sync route's), `plugin_full`, `route_full` or `host_full`."""

    outcome: str
    delivery_id: str | None = None  # `host_full` too: the host holds its bound and this plugin its share


def _not_in(column: str, values: Collection[str]) -> tuple[str, tuple[str, ...]]:
    # An empty `NOT IN ()` is SQLite-only (PostgreSQL refuses it); leave the clause out instead.
    return (f"AND {column} NOT IN ({','.join('?' * len(values))})", tuple(values)) if values else ("", ())


def _delivery(row: Sequence[object]) -> Delivery:
    return Delivery(**dict(zip(_COLUMNS, row, strict=True)))  # type: ignore[arg-type]


SWEEP_BATCH = 1000
"""Expired `dedupOn` keys one sweep write forgets at most: 10-15 ms of SQLite's writer (measured,
100,000 expired keys of 100 plugins), so a large backlog never holds it long, and the writes of
plugins queued meanwhile run between two batches."""
_ANY_EXPIRED = "SELECT 1 FROM ingress_dedup WHERE expires_at <= ? LIMIT 1"

# A row no live host holds: never claimed, or its claim lapsed (its host died or stopped renewing).
_UNCLAIMED = "(claimed_until IS NULL OR claimed_until <= ?)"
# When a pending row may next be handed over: its next_at, or the end of another host's claim if later.
_FREE_AT = "CASE WHEN claimed_until > next_at THEN claimed_until ELSE next_at END"


def _over_fair_share(c: Connection, held: int, size: int, host_max: int) -> bool:
    """Whether a plugin holding `held` bytes, adding `size`, is refused by the host-wide bound."""
    total, holders = c.execute(
        "SELECT coalesce(sum(length(request)), 0), count(DISTINCT plugin_id) FROM ingress_deliveries "
        "WHERE state IN (?, ?) AND length(request) > 0", (PENDING, DEAD)).fetchone()
    if int(total) + size <= host_max:
        return False
    sharers = int(holders) + (0 if held else 1)  # a plugin holding nothing yet counts itself in
    return held >= host_max // max(sharers, 1)


class IngressStore:
    def __init__(self, db: Database, *, history_per_plugin: int, dedup_keys_per_plugin: int,
                 dedup_keys_total: int | None = None, claim_s: float = DEFAULTS.queue_claim_ms / 1000) -> None:
        self._db = db
        self._claim_s = claim_s
        self.holder = uuid.uuid4().hex  # names this store's claims; a restarted host is a new holder
        self._history = history_per_plugin
        self.dedup = DedupKeys(per_plugin=dedup_keys_per_plugin, total=dedup_keys_total)

    # -- dedup --
    async def claim(self, plugin_id: str, dedup: DedupKey, now: float) -> bool:
        """A sync route's dedup: True if the key was free (and is now held), False on a repeat."""
        evicted: Evictions = {}
        free = await self._db.write(lambda c: self.dedup.claim(c, plugin_id, dedup, None, now, evicted) is None,
                                    owner=plugin_id)
        self.dedup.note(evicted)
        return free

    async def release(self, plugin_id: str, dedup: DedupKey) -> None:
        """Forget a key whose request we failed, so that the sender's retry gets through."""
        await self._db.write(lambda c: self.dedup.release(c, plugin_id, dedup), owner=plugin_id)

    async def sweep_expired(self, now: float, *, batch: int = SWEEP_BATCH) -> int:
        """Forget every `dedupOn` key expired at `now`, whichever plugin holds it, `batch` keys per
        write (other writes take their turns between two); returns how many went. Nothing expired
        costs one read. Keys another host's write holds at that instant are left to the next sweep."""
        if self._db.read(lambda c: c.execute(_ANY_EXPIRED, (now,)).fetchone()) is None:
            return 0
        swept = 0
        while True:
            gone = await self._db.write(lambda c: self.dedup.sweep(c, now, batch, self._db.skip_locked))
            swept += gone
            if gone < batch:
                return swept

    def dedup_keys_held(self) -> dict[str, int]:
        """`dedupOn` keys each plugin holds (for metrics)."""
        return self._db.read(self.dedup.held)

    # -- the queue --
    async def enqueue(self, delivery: NewDelivery, dedup: DedupKey | None, now: float, *,
                      plugin_max: int, route_max: int, bytes_max: int, host_bytes_max: int | None = None) -> Enqueued:
        """Store the delivery as pending, due now, unless its plugin's queue is full (`plugin_max`
        pending, or `bytes_max` bytes of request held by its pending and dead rows), its route's is
        (`route_max`), the host holds `host_bytes_max` and the plugin its fair share of it (see the
        module doc), or its dedup key was seen within the window. Returns after COMMIT: a queued
        delivery is durable."""
        d = delivery
        evicted: Evictions = {}

        def run(c: Connection) -> Enqueued:
            plugin_pending, route_pending, held = c.execute(
                "SELECT coalesce(sum(CASE WHEN state = ? THEN 1 ELSE 0 END), 0), "
                "coalesce(sum(CASE WHEN state = ? AND route = ? THEN 1 ELSE 0 END), 0), "
                "coalesce(sum(length(request)), 0) FROM ingress_deliveries WHERE plugin_id = ? AND state IN (?, ?)",
                (PENDING, PENDING, d.route, d.plugin_id, PENDING, DEAD)).fetchone()
            if int(plugin_pending) >= plugin_max or int(held) + len(d.request) > bytes_max:
                return Enqueued("plugin_full")
            if int(route_pending) >= route_max:
                return Enqueued("route_full")
            if host_bytes_max is not None and _over_fair_share(c, int(held), len(d.request), host_bytes_max):
                return Enqueued("host_full")
            if dedup is not None:
                seen = self.dedup.claim(c, d.plugin_id, dedup, d.id, now, evicted)
                if seen is not None:
                    return Enqueued("duplicate", seen or None)
            c.execute(
                "INSERT INTO ingress_deliveries (id, plugin_id, instance_id, route, request, state, attempts, next_at, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                (d.id, d.plugin_id, d.instance_id, d.route, d.request, PENDING, now, now, now))
            return Enqueued("queued", d.id)

        outcome = await self._db.write(run, owner=d.plugin_id)
        self.dedup.note(evicted)
        return outcome

    def due(self, now: float, limit: int, skip: Collection[str], plugin_room: dict[str, int]) -> list[Delivery]:
        """Pending deliveries whose time has come and that no live host has claimed, at most
        `plugin_room[p]` of plugin p (plugins not in it get none: not running, or no slot free). Each
        plugin's oldest first; between plugins, the one with the most room left (the fewest attempts
        in flight) first, and the oldest delivery among those with equal room."""
        if not plugin_room:
            return []
        return self._db.read(lambda c: self._due(c, now, limit, skip, plugin_room))

    async def claim_due(self, now: float, limit: int, skip: Collection[str],
                        plugin_room: dict[str, int]) -> list[Delivery]:
        """`due`, and on a shared database claimed for this store until `now + claim_s` in the same
        write, so no other host's `claim_due` returns them meanwhile. On a host's own file there is
        no one to race: the read alone, as `due`."""
        due = self.due(now, limit, skip, plugin_room)
        if not self._db.shared or not due:  # an idle queue costs a read, not a write
            return due

        def run(c: Connection) -> list[Delivery]:
            # Picked without a row lock (PostgreSQL locks no rows under a window function), then
            # locked and claimed; a row another host is claiming meanwhile is left to it.
            picked = [d.id for d in self._due(c, now, limit, skip, plugin_room)]
            if not picked:
                return []
            rows = c.execute(
                "UPDATE ingress_deliveries SET claimed_by = ?, claimed_until = ? WHERE id IN (SELECT id FROM "
                f"ingress_deliveries WHERE id IN ({','.join('?' * len(picked))}) AND state = ? AND {_UNCLAIMED} "
                f"{self._db.skip_locked}) RETURNING {_SELECT}",
                (self.holder, now + self._claim_s, *picked, PENDING, now)).fetchall()
            claimed = {d.id: d for d in map(_delivery, rows)}
            return [claimed[i] for i in picked if i in claimed]  # oldest first, as picked

        return await self._db.write(run)

    async def renew_claims(self, ids: Iterable[str], now: float) -> None:
        """Extend this store's claims on `ids` to `now + claim_s` (shared databases only)."""
        await claims.renew_claims(self._db, "ingress_deliveries", self.holder, PENDING, ids, now + self._claim_s)

    async def release_claims(self) -> None:
        """Give up this store's claims (the host stops): other hosts may take those rows at once."""
        await claims.release_claims(self._db, "ingress_deliveries", self.holder)

    def _due(self, c: Connection, now: float, limit: int, skip: Collection[str],
             plugin_room: dict[str, int]) -> list[Delivery]:
        not_in, skipped = _not_in("id", skip)
        plugins = tuple(plugin_room)
        rows = c.execute(
            f"SELECT {_SELECT} FROM (SELECT {_SELECT}, seq, row_number() OVER (PARTITION BY plugin_id "
            "ORDER BY next_at, seq) AS nth FROM ingress_deliveries "
            f"WHERE state = ? AND next_at <= ? AND {_UNCLAIMED} "
            f"AND plugin_id IN ({','.join('?' * len(plugins))}) {not_in}) AS ready "
            "WHERE nth <= ? ORDER BY next_at, seq",
            (PENDING, now, now, *plugins, *skipped, max(plugin_room.values()))).fetchall()
        # Each plugin's in its own order; a free slot goes to the plugin with the most room left (the
        # fewest attempts in flight), the oldest first only among equals: plugins whose per-plugin
        # slots add up to all of the host's must not queue another's delivery behind their backlogs.
        waiting: dict[str, list[tuple[int, Delivery]]] = {}
        for age, row in enumerate(rows):  # oldest first
            d = _delivery(row)
            waiting.setdefault(d.plugin_id, []).append((age, d))
        room = dict(plugin_room)
        out: list[Delivery] = []
        while len(out) < limit:
            ready = [p for p, ds in waiting.items() if ds and room[p] > 0]
            if not ready:
                break
            pick = min(ready, key=lambda p: (-room[p], waiting[p][0][0]))
            room[pick] -= 1
            out.append(waiting[pick].pop(0)[1])
        return out

    def next_due(self, skip: Collection[str], plugins: Collection[str]) -> float | None:
        """When the earliest pending delivery of one of `plugins`, not in `skip`, falls due (or another
        host's claim on it lapses)."""
        if not plugins:
            return None
        not_in, skipped = _not_in("id", skip)
        wanted = tuple(plugins)
        row = self._db.read(lambda c: c.execute(
            f"SELECT min({_FREE_AT}) FROM ingress_deliveries WHERE state = ? AND plugin_id IN "
            f"({','.join('?' * len(wanted))}) {not_in}", (PENDING, *wanted, *skipped)).fetchone())
        return None if row[0] is None else float(row[0])

    async def finish(self, delivery: Delivery, state: str, attempts: int, status: int | None, error: str | None,
                     now: float, next_at: float | None = None) -> bool:
        """Record an attempt: `pending` again (due at `next_at`), `delivered` or `dead`; the claim
        ends. False when the row is no longer pending (its plugin was uninstalled meanwhile) or
        another host holds it now (this store's claim lapsed and was taken)."""
        def run(c: Connection) -> bool:
            # A delivered row keeps no request: only a dead one can be replayed, so only it needs one.
            cur = c.execute(
                "UPDATE ingress_deliveries SET state = ?, attempts = ?, last_status = ?, last_error = ?, "
                "next_at = coalesce(?, next_at), updated_at = ?, claimed_by = NULL, claimed_until = NULL, "
                "request = CASE WHEN ? = ? THEN ? ELSE request END "
                "WHERE id = ? AND state = ? AND (claimed_by IS NULL OR claimed_by = ?)",
                (state, attempts, status, error, next_at, now, state, DELIVERED, b"", delivery.id, PENDING,
                 self.holder))
            if state != PENDING:
                c.execute(
                    "DELETE FROM ingress_deliveries WHERE plugin_id = ? AND state = ? AND seq <= (SELECT seq FROM "
                    "ingress_deliveries WHERE plugin_id = ? AND state = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (delivery.plugin_id, state, delivery.plugin_id, state, self._history))
            return cur.rowcount == 1

        return await self._db.write(run, owner=delivery.plugin_id)

    async def replay(self, plugin_id: str, delivery_id: str, now: float) -> bool:
        """Put a dead delivery back in the queue, due now, attempts from zero, its id kept."""
        cur = await self._db.write(lambda c: c.execute(
            "UPDATE ingress_deliveries SET state = ?, attempts = 0, next_at = ?, updated_at = ? "
            "WHERE id = ? AND plugin_id = ? AND state = ?", (PENDING, now, now, delivery_id, plugin_id, DEAD)),
            owner=plugin_id)
        return cur.rowcount == 1

    async def drop_plugin(self, plugin_id: str) -> None:
        """Forget everything of an uninstalled plugin: its queue, history and dedup keys."""
        def run(c: Connection) -> None:
            c.execute("DELETE FROM ingress_deliveries WHERE plugin_id = ?", (plugin_id,))
            self.dedup.drop(c, plugin_id)

        await self._db.write(run, owner=plugin_id)

    def get(self, plugin_id: str, delivery_id: str) -> Delivery | None:
        row = self._db.read(lambda c: c.execute(
            f"SELECT {_SELECT} FROM ingress_deliveries WHERE id = ? AND plugin_id = ?",
            (delivery_id, plugin_id)).fetchone())
        return None if row is None else _delivery(row)

    def deliveries(self, plugin_id: str, *, state: str | None, limit: int) -> list[Delivery]:
        """The plugin's newest `limit` deliveries, newest first, optionally of one state."""
        clause, args = ("AND state = ?", (state,)) if state is not None else ("", ())
        rows = self._db.read(lambda c: c.execute(
            f"SELECT {_SELECT} FROM ingress_deliveries WHERE plugin_id = ? {clause} ORDER BY seq DESC LIMIT ?",
            (plugin_id, *args, limit)).fetchall())
        return [_delivery(r) for r in rows]

    def pending_counts(self) -> dict[str, int]:
        """Pending deliveries per plugin (for metrics)."""
        rows = self._db.read(lambda c: c.execute(
            "SELECT plugin_id, count(*) FROM ingress_deliveries WHERE state = ? GROUP BY plugin_id",
            (PENDING,)).fetchall())
        return {str(p): int(n) for p, n in rows}
