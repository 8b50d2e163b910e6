"""The outbound webhook service: the host's one seam for it (`observe`, told the outcome of every
hook chain), the operator's subscription CRUD, the delivery lists and replay.

What happens to a host event, in order:
1. `observe(outcome, session_id)` — called by the hook bus after each chain (`HookBus.on_outcome`,
   set only while an enabled subscription exists) — finds the subscriptions that want the event;
2. per subscription, `webhook:before` runs with `{deliveryId, subscriptionId, event, payload}`: a
   handler that stops it cancels that one delivery; one allowed to modify data may rewrite `payload`
   (its `id` and `event` are kept: the id is what the signature covers and receivers dedupe on);
3. the deliveries are written to the queue in one durable transaction, and only then does `observe`
   return (the event's producer carries on after the queue has it); `webhook:queued` fires per delivery;
4. the worker (`delivery.DeliveryWorker`) attempts them, with retries, backoff and the dead-letter list.

A failure to queue (database closed, queue full, payload too large) is logged and does not fail the
event that produced it: plugins have already acted on it.

The queue is host-wide (`webhook_queue_max`), so each plugin whose doing an event is (its `cause`:
its sends, and what the engine reports of them) has only a share of it
(`webhook_pending_per_cause`). Past its share, its events' new deliveries are dropped before
`webhook:before` runs or the queue is written, counted against it (`dropped`, `on_dropped`) and
said once in the host log; the engine's events and other plugins' still queue.

The rows a cause's deliveries add are its database writes as much as its own `storage.set`s are:
they spend its `WriteBudget` (the bucket all its stores share; its send waits while the bucket is in
debt) and are written in its own turn of the database writer, so a flood of sends cannot starve
the host's other writes. A delivery its budget refuses is dropped and counted like one past its share.

The envelope is `{id, event, sessionId, timestamp, data}`; for a veto event (`message:sending`) it
also carries `outcome: {vetoed, by}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from plugbox.errors import ConfigError, StorageError
from plugbox.events import VETO_EVENTS
from plugbox.hooks import HookBus, HookOutcome
from plugbox.lifecycle.clock import Clock, SystemClock
from plugbox.settings import Settings
from plugbox.storage.db import Database
from plugbox.storage.quota import WriteBudget, row_cost
from plugbox.webhooks.delivery import Backoff, DeliveryWorker, GuardedSender, Sender
from plugbox.webhooks.store import STATES, Delivery, NewDelivery, WebhookStore
from plugbox.webhooks.subscriptions import Subscription, SubscriptionSpec

__all__ = ["WebhookService"]

log = logging.getLogger("plugbox.webhooks")


class WebhookService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        bus: HookBus,
        *,
        sender: Sender | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_dropped: Callable[[str, int], None] | None = None,
        write_budget: WriteBudget | None = None,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._clock = clock or SystemClock()
        self._shared = db.shared
        self._store = WebhookStore(db, history_max=settings.webhook_history_max,
                                   history_max_bytes=settings.webhook_history_max_bytes,
                                   claim_s=settings.queue_claim_ms / 1000)
        self._subs = {s.id: s for s in self._store.subscriptions()}
        self._worker = DeliveryWorker(
            self._store, self._subscription_now, sender or GuardedSender(settings), self._fire,
            max_attempts=settings.webhook_max_attempts,
            backoff=Backoff(settings.webhook_backoff_initial_ms / 1000, settings.webhook_backoff_max_ms / 1000),
            max_in_flight=settings.webhook_max_in_flight, clock=self._clock, rng=rng or random.Random(),
            poll_s=settings.queue_poll_ms / 1000 if db.shared else None,
            claim_s=settings.queue_claim_ms / 1000 if db.shared else None,
        )
        self._task: asyncio.Task[None] | None = None
        self.not_queued = 0  # deliveries lost before the queue had them (logged each time)
        self._dropped: dict[str, int] = {}  # cause -> its deliveries dropped past its share of the queue
        self._on_dropped = on_dropped  # told (cause, how many) of deliveries dropped past its share
        self._write_budget = write_budget or WriteBudget.from_settings(settings)  # the causes' own buckets
        self._retap()

    # -- start / stop --
    def start(self) -> None:
        """Start delivering (pending deliveries left by an earlier run included)."""
        self._retap()
        if self._task is None:
            self._task = asyncio.create_task(self._worker.run(), name="plugbox-webhook-worker")

    async def stop(self) -> None:
        """Stop delivering; attempts in flight are abandoned and stay queued for the next start."""
        self._bus.on_outcome = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the seam --
    def _retap(self) -> None:
        # No enabled subscription: the bus calls nothing after a chain, so webhooks cost nothing.
        self._bus.on_outcome = self.observe if any(s.enabled for s in self._subs.values()) else None

    async def _fire(self, event: str, data: dict[str, Any], session_id: str | None,
                    cause: str | None = None) -> HookOutcome:
        """`cause`: the plugin whose doing the delivery is (its send); the events of its attempts
        then have only that cause's share of other observers' slots. None: the current task's."""
        return await self._bus.execute(event, data, session_id, source="webhooks", cause=cause)

    async def observe(self, outcome: HookOutcome, session_id: str | None) -> None:
        """Queue a delivery of this event for every subscription that wants it (see the module doc)."""
        event = outcome.event
        wanting = [s for s in self._subs.values() if s.wants(event)]
        if not wanting:
            return
        cause = outcome.cause
        if cause is not None and not self._has_room(cause):
            self._drop(cause, len(wanting), event)  # not worth a webhook:before each
            return
        now = self._clock.time()
        envelope: dict[str, Any] = {"event": event, "sessionId": session_id,
                                    "timestamp": datetime.fromtimestamp(now, UTC).isoformat(), "data": outcome.data}
        if event in VETO_EVENTS:
            envelope["outcome"] = {"vetoed": outcome.vetoed, "by": outcome.stopped_by}
        fresh = [d for sub in wanting if (d := await self._prepare(sub, envelope, session_id, cause)) is not None]
        if not fresh:
            return
        if cause is not None:
            try:
                await self._write_budget.spend(cause, sum(_row_cost(d) for d in fresh))
            except StorageError:
                self._drop(cause, len(fresh), event)
                return
        try:
            stored = await self._store.enqueue(fresh, now, self._settings.webhook_queue_max,
                                               self._settings.webhook_pending_per_cause)
        except Exception as exc:  # StorageError, a closed database: the event itself goes on
            self.not_queued += len(fresh)
            log.error("webhooks: %d deliveries of %s not queued: %s", len(fresh), event, exc)
            return
        queued = set(stored)
        if len(stored) < len(fresh):
            # Between the check above and the write, the cause's share or the whole queue filled.
            if cause is not None and self._store.pending_of(cause) >= self._settings.webhook_pending_per_cause:
                self._drop(cause, len(fresh) - len(stored), event)
            else:
                self.not_queued += len(fresh) - len(stored)
                log.warning("webhooks: queue full (%d pending); %d deliveries of %s refused",
                            self._settings.webhook_queue_max, len(fresh) - len(stored), event)
        self._worker.wake()
        for d in fresh:
            if d.id in queued:
                await self._fire("webhook:queued", {"deliveryId": d.id, "subscriptionId": d.subscription_id,
                                                    "event": event}, session_id)

    def _has_room(self, cause: str) -> bool:
        """Whether the cause may add deliveries now: under its share of the queue, and its write budget
        would not refuse the write (checked before any `webhook:before` is spent on them)."""
        if self._store.pending_of(cause) >= self._settings.webhook_pending_per_cause:
            return False
        try:
            self._write_budget.check(cause)
        except StorageError:
            return False
        return True

    def dropped(self, plugin_id: str) -> int:
        """Deliveries of events the plugin caused, dropped because it was at its share of the queue
        or its write budget was spent."""
        return self._dropped.get(plugin_id, 0)

    def _drop(self, cause: str, count: int, event: str) -> None:
        self.not_queued += count
        first = cause not in self._dropped
        self._dropped[cause] = self._dropped.get(cause, 0) + count
        if first:
            log.warning("webhooks: plugin %s is at its share of the queue (%d deliveries pending) or of the "
                        "database's writes (storage_write_bytes_per_s); deliveries of events it causes are "
                        "dropped meanwhile (said once per plugin), here %d of %s",
                        cause, self._settings.webhook_pending_per_cause, count, event)
        if self._on_dropped is not None:
            self._on_dropped(cause, count)

    async def _prepare(self, sub: Subscription, envelope: dict[str, Any], session_id: str | None,
                       cause: str | None) -> NewDelivery | None:
        delivery_id = f"msg_{uuid.uuid4().hex}"
        payload = {"id": delivery_id, **envelope}
        before = await self._fire("webhook:before", {"deliveryId": delivery_id, "subscriptionId": sub.id,
                                                     "event": envelope["event"], "payload": payload}, session_id)
        if before.vetoed:
            log.info("webhooks: delivery %s of %s cancelled by plugin %s", delivery_id, envelope["event"],
                     before.stopped_by)
            return None
        if isinstance(before.data, dict) and isinstance(before.data.get("payload"), dict):
            payload = {**before.data["payload"], "id": delivery_id, "event": envelope["event"]}
        try:
            body = msgspec.json.encode(payload)
        except (TypeError, msgspec.EncodeError) as exc:
            self.not_queued += 1
            log.error("webhooks: %s for %s not queued: payload is not JSON: %s", envelope["event"], sub.id, exc)
            return None
        if len(body) > self._settings.webhook_body_max_bytes:
            self.not_queued += 1
            log.error("webhooks: %s for %s not queued: %d bytes, over the %d-byte cap", envelope["event"], sub.id,
                      len(body), self._settings.webhook_body_max_bytes)
            return None
        return NewDelivery(delivery_id, sub.id, envelope["event"], session_id, body, cause)

    # -- subscriptions --
    def _subscription_now(self, sub_id: str) -> Subscription | None:
        """The subscription of a row this host claimed. On a shared database another host may have
        created it within the last moment (its announcement not heard yet): read them again then."""
        if sub_id not in self._subs and self._shared:
            self._reload()
        return self._subs.get(sub_id)

    def subscriptions(self) -> list[Subscription]:
        return list(self._subs.values())

    def follow(self) -> None:
        """Another host changed the subscriptions (a shared database): read them again."""
        self._reload()
        self._worker.wake()

    def subscription(self, sub_id: str) -> Subscription | None:
        return self._subs.get(sub_id)

    async def create(self, spec: SubscriptionSpec) -> Subscription:
        """Store a new subscription (ConfigError when a field is missing or the limit is reached)."""
        if len(self._subs) >= self._settings.webhook_subscriptions_max:
            raise ConfigError("url", f"at most {self._settings.webhook_subscriptions_max} subscriptions")
        full = spec.complete()
        assert full.url is not None and full.events is not None and full.secret is not None
        sub = Subscription(id=f"wh_{uuid.uuid4().hex[:20]}", url=full.url, events=full.events, secret=full.secret,
                           enabled=bool(full.enabled), description=full.description or "",
                           created_at=self._clock.time())
        await self._store.insert(sub)
        self._reload()
        return sub

    async def update(self, sub_id: str, spec: SubscriptionSpec) -> Subscription | None:
        if not await self._store.update(sub_id, spec):
            return None
        self._reload()
        self._worker.wake()  # re-enabled: its queue may be due
        return self._subs.get(sub_id)

    async def delete(self, sub_id: str) -> bool:
        found = await self._store.delete(sub_id)
        self._reload()
        return found

    def _reload(self) -> None:
        self._subs.clear()
        self._subs.update((s.id, s) for s in self._store.subscriptions())
        self._retap()

    # -- deliveries --
    def deliveries(self, *, subscription_id: str | None = None, state: str | None = None,
                   limit: int = 100) -> list[Delivery]:
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        return self._store.deliveries(subscription_id=subscription_id, state=state, limit=limit)

    def delivery(self, delivery_id: str) -> Delivery | None:
        return self._store.get(delivery_id)

    async def replay(self, delivery_id: str) -> Delivery | None:
        """Re-queue a dead-lettered delivery (same id, attempts from zero); None if it is not dead."""
        if not await self._store.replay(delivery_id, self._clock.time()):
            return None
        self._worker.wake()
        return self._store.get(delivery_id)


def _row_cost(d: NewDelivery) -> int:
    """What one delivery's row takes in the file (its fixed columns: a few numbers and a state)."""
    payload = len(d.body) + len(d.id) + len(d.subscription_id) + len(d.event) + len(d.session_id or "")
    return row_cost(payload + len(d.cause or "") + 48, index=False)
