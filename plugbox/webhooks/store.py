"""The webhook tables: subscriptions and the durable delivery queue, in the host's database.

Every change goes through `Database.write` (the one writer thread, one fsynced transaction each), so
a delivery `enqueue` has returned for is on disk: a host killed right after loses none. A delivery is
one row from enqueue to its end; its state is `pending` (waiting or being attempted), `delivered` or
`dead` (the dead-letter list). Nothing marks a row "in flight" on disk: a host that dies during an
attempt finds the row `pending` again at start and attempts it again with the same id, which is why
the guarantee is at-least-once (receivers deduplicate on `webhook-id`).

Each delivery records its `cause`: the plugin whose doing the event was (its send), or NULL for the
engine's and the host's own events. The queue is bounded host-wide, and each cause has a share of
it: a delivery past either bound is not stored (`enqueue` says which were). The SQL stays plain (a
nullable column and an index) so the tables port to another database as they are.

This module holds SQL only: no hooks, no network, no retry policy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import msgspec

from plugbox.storage.db import Connection, Database
from plugbox.webhooks.subscriptions import Subscription, SubscriptionSpec

__all__ = ["Delivery", "NewDelivery", "WebhookStore"]

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATES = (PENDING, DELIVERED, DEAD)

_DELIVERY_COLUMNS = ("id, subscription_id, event, session_id, body, state, attempts, next_at, last_status, "
                     "last_error, created_at, updated_at")


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


def _pending_of(c: Connection, cause: str) -> int:
    (count,) = c.execute("SELECT count(*) FROM webhook_deliveries WHERE cause = ? AND state = ?",
                         (cause, PENDING)).fetchone()
    return int(count)


def _subscription(row: Sequence[object]) -> Subscription:
    sid, url, events, secret, enabled, description, created_at = row
    return Subscription(id=str(sid), url=str(url), events=tuple(json.loads(str(events))), secret=str(secret),
                        enabled=bool(enabled), description=str(description), created_at=float(created_at))  # type: ignore[arg-type]


class WebhookStore:
    def __init__(self, db: Database, *, history_max: int) -> None:
        self._db = db
        self._history_max = history_max

    # -- subscriptions --
    def subscriptions(self) -> list[Subscription]:
        rows = self._db.read(lambda c: c.execute(
            "SELECT id, url, events, secret, enabled, description, created_at FROM webhook_subscriptions "
            "ORDER BY created_at, id").fetchall())
        return [_subscription(r) for r in rows]

    async def insert(self, sub: Subscription) -> None:
        await self._db.write(lambda c: c.execute(
            "INSERT INTO webhook_subscriptions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sub.id, sub.url, json.dumps(sub.events), sub.secret, int(sub.enabled), sub.description,
             sub.created_at)))

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
            return cur.rowcount == 1

        return await self._db.write(run)

    async def delete(self, sub_id: str) -> bool:
        """Remove the subscription and, with it, every delivery of it (queued and dead ones too)."""
        cur = await self._db.write(lambda c: c.execute("DELETE FROM webhook_subscriptions WHERE id = ?", (sub_id,)))
        return cur.rowcount == 1

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

        return await self._db.write(run)

    def pending_of(self, cause: str) -> int:
        """Deliveries of events `cause` caused that wait in the queue."""
        return self._db.read(lambda c: _pending_of(c, cause))

    def due(self, now: float, limit: int, skip: Iterable[str]) -> list[Delivery]:
        """Pending deliveries of enabled subscriptions whose time has come, oldest first."""
        skipped = tuple(skip)
        rows = self._db.read(lambda c: c.execute(
            f"SELECT {', '.join('d.' + x for x in _DELIVERY_COLUMNS.split(', '))} FROM webhook_deliveries d "
            "JOIN webhook_subscriptions s ON s.id = d.subscription_id "
            f"WHERE d.state = ? AND d.next_at <= ? AND s.enabled = 1{_not_in('d.id', skipped)} "
            "ORDER BY d.next_at, d.seq LIMIT ?", (PENDING, now, *skipped, limit)).fetchall())
        return [_delivery(r) for r in rows]

    def next_due(self, skip: Iterable[str]) -> float | None:
        """When the earliest pending delivery of an enabled subscription, not in `skip`, falls due;
        None if none waits."""
        skipped = tuple(skip)
        row = self._db.read(lambda c: c.execute(
            "SELECT min(d.next_at) FROM webhook_deliveries d JOIN webhook_subscriptions s "
            f"ON s.id = d.subscription_id WHERE d.state = ? AND s.enabled = 1{_not_in('d.id', skipped)}",
            (PENDING, *skipped)).fetchone())
        return None if row[0] is None else float(row[0])

    async def finish(self, delivery_id: str, state: str, attempts: int, status: int | None, error: str | None,
                     now: float, next_at: float | None = None) -> bool:
        """Record an attempt: `pending` again (due at `next_at`), `delivered` or `dead`. False when the
        row is gone (its subscription was deleted meanwhile)."""
        def run(c: Connection) -> bool:
            cur = c.execute(
                "UPDATE webhook_deliveries SET state = ?, attempts = ?, last_status = ?, last_error = ?, "
                "next_at = coalesce(?, next_at), updated_at = ? WHERE id = ? AND state = ?",
                (state, attempts, status, error, next_at, now, delivery_id, PENDING))
            if state != PENDING:
                self._prune(c, state)
            return cur.rowcount == 1

        return await self._db.write(run)

    def _prune(self, c: Connection, state: str) -> None:
        c.execute(
            "DELETE FROM webhook_deliveries WHERE state = ? AND seq <= (SELECT seq FROM webhook_deliveries "
            "WHERE state = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)", (state, state, self._history_max))

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
