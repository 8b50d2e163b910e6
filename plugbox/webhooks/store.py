"""The webhook tables: subscriptions and the durable delivery queue, in the host's database.

Every change goes through `Database.write` (the one writer thread, one fsynced transaction each), so
a delivery `enqueue` has returned for is on disk: a host killed right after loses none. A delivery is
one row from enqueue to its end; its state is `pending` (waiting or being attempted), `delivered` or
`dead` (the dead-letter list). On a host's own SQLite file nothing marks a row "in flight" on disk:
a host that dies during an attempt finds the row `pending` again at start and attempts it again with
the same id, which is why the guarantee is at-least-once (receivers deduplicate on `webhook-id`).

On a database several hosts share, a host attempts only the rows it has claimed (`claim_due`: one
UPDATE whose SELECT skips rows another host is claiming at that instant, `Database.skip_locked`).
A claim names this store (`holder`) and lasts `claim_s` unless renewed; only its holder (or nobody,
once it lapsed) records the attempt's outcome, which ends the claim. So while hosts live, each
delivery is attempted by one host at a time; a host that dies leaves claims that lapse, and another
host attempts those deliveries again under the same id.

Each delivery records its `cause`: the plugin whose doing the event was (its send), or NULL for the
engine's and the host's own events. The queue is bounded host-wide, and each cause has a share of
it: a delivery past either bound is not stored (`enqueue` says which were). The SQL stays plain (a
nullable column and an index) so the tables port to another database as they are.

This module holds SQL only: no hooks, no network, no retry policy.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence

import msgspec

from plugbox.settings import DEFAULTS
from plugbox.storage import claims
from plugbox.storage.db import Connection, Database
from plugbox.webhooks.subscriptions import Subscription, SubscriptionSpec

__all__ = ["TOPIC", "Delivery", "NewDelivery", "WebhookStore"]

TOPIC = "webhooks"  # what a subscription change announces to other hosts on a shared database
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATES = (PENDING, DELIVERED, DEAD)

_DELIVERY_COLUMNS = ("id, subscription_id, event, session_id, body, state, attempts, next_at, last_status, "
                     "last_error, created_at, updated_at, cause")


class NewDelivery(msgspec.Struct, frozen=True):
    id: str
    subscription_id: str
    event: str
    session_id: str | None
    body: bytes
    cause: str | None = None  # the plugin whose doing the event was; None: the engine's or the host's


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    subscription_id: str
    event: str
    session_id: str | None
    body: bytes
    state: str
    attempts: int
    next_at: float
    last_status: int | None
    last_error: str | None
    created_at: float
    updated_at: float
    cause: str | None = None  # the plugin whose doing the event was: its attempts' events are its doing too

    def public(self) -> dict[str, object]:
        """The API's view: the body as the JSON it is, the rest as stored."""
        return {"id": self.id, "subscriptionId": self.subscription_id, "event": self.event,
                "sessionId": self.session_id, "state": self.state, "attempts": self.attempts,
                "nextAttemptAt": self.next_at if self.state == PENDING else None,
                "lastStatus": self.last_status, "lastError": self.last_error, "createdAt": self.created_at,
                "updatedAt": self.updated_at, "payload": json.loads(self.body)}


def _not_in(column: str, values: tuple[str, ...]) -> str:
    """` AND column NOT IN (?, ...)`, or nothing for no values (PostgreSQL refuses an empty list)."""
    return f" AND {column} NOT IN ({', '.join('?' * len(values))})" if values else ""


def _delivery(row: Sequence[object]) -> Delivery:
    return Delivery(**dict(zip(_DELIVERY_COLUMNS.split(", "), row, strict=True)))  # type: ignore[arg-type]


# A row no live host holds: never claimed, or its claim lapsed (its host died or stopped renewing).
_UNCLAIMED = "(d.claimed_until IS NULL OR d.claimed_until <= ?)"
# When a pending row may next be attempted: its next_at, or the end of another host's claim if later.
_FREE_AT = "CASE WHEN d.claimed_until > d.next_at THEN d.claimed_until ELSE d.next_at END"


def _pending_of(c: Connection, cause: str) -> int:
    (count,) = c.execute("SELECT count(*) FROM webhook_deliveries WHERE cause = ? AND state = ?",
                         (cause, PENDING)).fetchone()
    return int(count)


def _subscription(row: Sequence[object]) -> Subscription:
    sid, url, events, secret, enabled, description, created_at = row
    return Subscription(id=str(sid), url=str(url), events=tuple(json.loads(str(events))), secret=str(secret),
                        enabled=bool(enabled), description=str(description), created_at=float(created_at))  # type: ignore[arg-type]


class WebhookStore:
    def __init__(self, db: Database, *, history_max: int, history_max_bytes: int | None = None,
                 claim_s: float = DEFAULTS.queue_claim_ms / 1000) -> None:
        self._db = db
        self._history_max = history_max
        self._history_bytes = history_max_bytes  # None: rows are the only bound
        self._finished_bytes: dict[str, int] = {}  # state -> body bytes finished since its last byte prune
        self._claim_s = claim_s
        self.holder = uuid.uuid4().hex  # names this store's claims; a restarted host is a new holder

    # -- subscriptions --
    def subscriptions(self) -> list[Subscription]:
        rows = self._db.read(lambda c: c.execute(
            "SELECT id, url, events, secret, enabled, description, created_at FROM webhook_subscriptions "
            "ORDER BY created_at, id").fetchall())
        return [_subscription(r) for r in rows]

    async def insert(self, sub: Subscription) -> None:
        def run(c: Connection) -> None:
            c.execute("INSERT INTO webhook_subscriptions VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (sub.id, sub.url, json.dumps(sub.events), sub.secret, int(sub.enabled), sub.description,
                       sub.created_at))
            self._db.announce(c, TOPIC, sub.id)

        await self._db.write(run)

    async def update(self, sub_id: str, spec: SubscriptionSpec) -> bool:
        changes = {"url": spec.url, "events": None if spec.events is None else json.dumps(spec.events),
                   "secret": spec.secret, "enabled": None if spec.enabled is None else int(spec.enabled),
                   "description": spec.description}
        sets = {k: v for k, v in changes.items() if v is not None}

        def run(c: Connection) -> bool:
            if not sets:
                return c.execute("SELECT 1 FROM webhook_subscriptions WHERE id = ?", (sub_id,)).fetchone() is not None
            assignments = ", ".join(f"{k} = ?" for k in sets)  # keys from the fixed dict above, not input
            cur = c.execute(f"UPDATE webhook_subscriptions SET {assignments} WHERE id = ?", (*sets.values(), sub_id))
            self._db.announce(c, TOPIC, sub_id)
            return cur.rowcount == 1

        return await self._db.write(run)

    async def delete(self, sub_id: str) -> bool:
        """Remove the subscription and, with it, every delivery of it (queued and dead ones too)."""
        def run(c: Connection) -> bool:
            cur = c.execute("DELETE FROM webhook_subscriptions WHERE id = ?", (sub_id,))
            self._db.announce(c, TOPIC, sub_id)
            return cur.rowcount == 1

        return await self._db.write(run)

    # -- the queue --
    async def enqueue(self, deliveries: Iterable[NewDelivery], now: float, queue_max: int,
                      per_cause: int) -> list[str]:
        """Store the deliveries as pending, due now, in one transaction; returns the ids stored. Not
        stored: those past `queue_max` pending rows, and those of a cause past `per_cause` pending
        rows of its own (events with no cause have only the host-wide bound). Returns after COMMIT:
        the rows are durable."""
        batch = list(deliveries)

        def run(c: Connection) -> list[str]:
            (pending,) = c.execute("SELECT count(*) FROM webhook_deliveries WHERE state = ?", (PENDING,)).fetchone()
            room = max(queue_max - int(pending), 0)
            rooms: dict[str, int] = {}  # cause -> deliveries it may still add
            kept: list[NewDelivery] = []
            for d in batch:
                if room <= 0:
                    break
                if d.cause is not None:
                    if d.cause not in rooms:
                        rooms[d.cause] = per_cause - _pending_of(c, d.cause)
                    if rooms[d.cause] <= 0:
                        continue
                    rooms[d.cause] -= 1
                kept.append(d)
                room -= 1
            c.executemany(
                "INSERT INTO webhook_deliveries (id, subscription_id, event, session_id, body, state, attempts, "
                "next_at, created_at, updated_at, cause) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
                [(d.id, d.subscription_id, d.event, d.session_id, d.body, PENDING, now, now, now, d.cause)
                 for d in kept])
            return [d.id for d in kept]

        # One event's deliveries share one cause: they are written in that plugin's turn.
        owners = {d.cause for d in batch}
        return await self._db.write(run, owner=owners.pop() if len(owners) == 1 else None)

    def pending_of(self, cause: str) -> int:
        """Deliveries of events `cause` caused that wait in the queue."""
        return self._db.read(lambda c: _pending_of(c, cause))

    def due(self, now: float, limit: int, skip: Iterable[str]) -> list[Delivery]:
        """Pending deliveries of enabled subscriptions whose time has come and that no live host has
        claimed, oldest first."""
        skipped = tuple(skip)
        rows = self._db.read(lambda c: c.execute(
            f"SELECT {', '.join('d.' + x for x in _DELIVERY_COLUMNS.split(', '))} FROM webhook_deliveries d "
            "JOIN webhook_subscriptions s ON s.id = d.subscription_id "
            f"WHERE d.state = ? AND d.next_at <= ? AND {_UNCLAIMED} AND s.enabled = 1{_not_in('d.id', skipped)} "
            "ORDER BY d.next_at, d.seq LIMIT ?", (PENDING, now, now, *skipped, limit)).fetchall())
        return [_delivery(r) for r in rows]

    async def claim_due(self, now: float, limit: int, skip: Iterable[str]) -> list[Delivery]:
        """`due`, and on a shared database claimed for this store until `now + claim_s` in the same
        write, so no other host's `claim_due` returns them meanwhile. On a host's own file there is
        no one to race: the read alone, as `due`."""
        skipped = tuple(skip)
        due = self.due(now, limit, skipped)
        if not self._db.shared or not due:  # an idle queue costs a read, not a write
            return due

        def run(c: Connection) -> list[Delivery]:
            # EXISTS rather than a join: the row lock (skip_locked) must take delivery rows only.
            rows = c.execute(
                "UPDATE webhook_deliveries SET claimed_by = ?, claimed_until = ? WHERE id IN ("
                "SELECT d.id FROM webhook_deliveries d WHERE d.state = ? AND d.next_at <= ? "
                f"AND {_UNCLAIMED}{_not_in('d.id', skipped)} AND EXISTS (SELECT 1 FROM webhook_subscriptions s "
                "WHERE s.id = d.subscription_id AND s.enabled = 1) "
                f"ORDER BY d.next_at, d.seq LIMIT ? {self._db.skip_locked}) RETURNING {_DELIVERY_COLUMNS}, seq",
                (self.holder, now + self._claim_s, PENDING, now, now, *skipped, limit)).fetchall()
            rows.sort(key=lambda r: (r[7], r[-1]))  # RETURNING keeps no order: next_at, then seq
            return [_delivery(r[:-1]) for r in rows]

        return await self._db.write(run)

    async def renew_claims(self, ids: Iterable[str], now: float) -> None:
        """Extend this store's claims on `ids` to `now + claim_s` (shared databases only)."""
        await claims.renew_claims(self._db, "webhook_deliveries", self.holder, PENDING, ids, now + self._claim_s)

    async def release_claims(self) -> None:
        """Give up this store's claims (the host stops): other hosts may take those rows at once."""
        await claims.release_claims(self._db, "webhook_deliveries", self.holder)

    def next_due(self, skip: Iterable[str]) -> float | None:
        """When the earliest pending delivery of an enabled subscription, not in `skip`, falls due
        (or another host's claim on it lapses); None if none waits."""
        skipped = tuple(skip)
        row = self._db.read(lambda c: c.execute(
            f"SELECT min({_FREE_AT}) FROM webhook_deliveries d JOIN webhook_subscriptions s "
            f"ON s.id = d.subscription_id WHERE d.state = ? AND s.enabled = 1{_not_in('d.id', skipped)}",
            (PENDING, *skipped)).fetchone())
        return None if row[0] is None else float(row[0])

    async def finish(self, delivery_id: str, state: str, attempts: int, status: int | None, error: str | None,
                     now: float, next_at: float | None = None) -> bool:
        """Record an attempt: `pending` again (due at `next_at`), `delivered` or `dead`; the claim
        ends. False when the row is gone (its subscription was deleted meanwhile) or another host
        holds it now (this store's claim lapsed and was taken: that host records its own attempt)."""
        def run(c: Connection) -> bool:
            cur = c.execute(
                "UPDATE webhook_deliveries SET state = ?, attempts = ?, last_status = ?, last_error = ?, "
                "next_at = coalesce(?, next_at), updated_at = ?, claimed_by = NULL, claimed_until = NULL "
                "WHERE id = ? AND state = ? AND (claimed_by IS NULL OR claimed_by = ?)",
                (state, attempts, status, error, next_at, now, delivery_id, PENDING, self.holder))
            if state != PENDING and cur.rowcount == 1:
                self._prune(c, state, delivery_id)
            return cur.rowcount == 1

        return await self._db.write(run)

    def _prune(self, c: Connection, state: str, finished: str) -> None:
        """Keep the newest `history_max` finished deliveries of `state`, and of those only as many as
        fit in `history_max_bytes` of body: rows alone let the history hold rows x the body cap.
        Summing the bodies walks the whole history, so it runs once per sixteenth of the bound
        finished (the history may pass the bound by that much meanwhile), not on every finish."""
        if self._history_bytes is not None:  # (read before the row bound may take this very row)
            (size,) = c.execute("SELECT length(body) FROM webhook_deliveries WHERE id = ?", (finished,)).fetchone()
            self._finished_bytes[state] = self._finished_bytes.get(state, 0) + int(size)
        c.execute(
            "DELETE FROM webhook_deliveries WHERE state = ? AND seq <= (SELECT seq FROM webhook_deliveries "
            "WHERE state = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)", (state, state, self._history_max))
        if self._history_bytes is not None and self._finished_bytes[state] >= self._history_bytes // 16:
            self._finished_bytes[state] = 0
            c.execute(
                "DELETE FROM webhook_deliveries WHERE state = ? AND seq <= (SELECT max(seq) FROM (SELECT seq, "
                "sum(length(body)) OVER (ORDER BY seq DESC) AS newer FROM webhook_deliveries WHERE state = ?) "
                "AS kept WHERE newer > ?)", (state, state, self._history_bytes))

    async def replay(self, delivery_id: str, now: float) -> bool:
        """Put a dead delivery back in the queue, due now, with its attempts reset and its id kept."""
        cur = await self._db.write(lambda c: c.execute(
            "UPDATE webhook_deliveries SET state = ?, attempts = 0, next_at = ?, updated_at = ? "
            "WHERE id = ? AND state = ?", (PENDING, now, now, delivery_id, DEAD)))
        return cur.rowcount == 1

    def get(self, delivery_id: str) -> Delivery | None:
        row = self._db.read(lambda c: c.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?", (delivery_id,)).fetchone())
        return None if row is None else _delivery(row)

    def deliveries(self, *, subscription_id: str | None, state: str | None, limit: int) -> list[Delivery]:
        """The newest `limit` deliveries, newest first, optionally of one subscription or state."""
        where, args = [], []
        if subscription_id is not None:
            where.append("subscription_id = ?")
            args.append(subscription_id)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.read(lambda c: c.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries {clause} ORDER BY seq DESC LIMIT ?",
            (*args, limit)).fetchall())
        return [_delivery(r) for r in rows]
