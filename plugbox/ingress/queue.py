"""The async ingress queue: verified requests of `mode: async` routes, queued durably, then handed to
their plugin's handler with retries, exponential backoff with jitter, and a dead-letter list the
operator can list and replay.

Order for one request (the HTTP side is `plugbox.api.routes.ingress`): signature verified → `submit`
(bounds per plugin and per route, the `dedupOn` key, the row, one transaction) → 202. Then the runner
(`plugbox.queue.QueueRunner`, shared with outbound webhooks) takes due deliveries of running plugins,
at most `ingress_max_in_flight` host-wide and `ingress_max_in_flight_per_plugin` per plugin, so a
flooded or slow plugin holds only its own slots. An attempt is the same dispatch as a sync route's,
under `ingress_delivery_budget_ms`, with `deliveryId` and `attempt` added to the request; a handler
that answers below 500 delivers it. A delivery of a plugin that is not running waits (its attempts
are not spent) until the plugin runs again.

Delivery is at-least-once with a stable `deliveryId`: a host that dies while a handler runs attempts
that delivery again after restart (the worker died with the host, so the handler never finished); only
a crash in the instant between the handler's answer and the commit of `delivered` repeats a finished
one, which a handler that records `deliveryId` can recognise.

This module holds no SQL (`store`) and no HTTP; it reaches plugins only through the `dispatch` callable
the host gives it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import msgspec

from plugbox.ingress.store import (
    DEAD,
    DELIVERED,
    PENDING,
    STATES,
    DedupKey,
    Delivery,
    Enqueued,
    IngressStore,
    NewDelivery,
)
from plugbox.lifecycle.clock import Clock, SystemClock
from plugbox.lifecycle.ingress import IngressReply
from plugbox.queue import Backoff, QueueRunner
from plugbox.settings import Settings
from plugbox.storage.db import Database

__all__ = ["Dispatch", "IngressQueue", "public"]

log = logging.getLogger("plugbox.ingress")

Dispatch = Callable[[str, str, dict[str, Any], int, dict[str, Any]], Awaitable[IngressReply]]
"""(plugin_id, route, request, budget_ms, about) → the handler's reply; `about` goes into `ingress:error`."""

_ERROR_MAX_CHARS = 500
_POLL_S = 1.0  # how soon a delivery waiting for its plugin to run is looked at again


class IngressQueue:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        dispatch: Dispatch,
        running: Callable[[], Collection[str]],
        clock: Clock | None = None,
        rng: random.Random | None = None,
        sweep_sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        # The sweep's period is housekeeping, not a backoff: it waits in the loop's own time unless a
        # test gives it a sleep (a test driving the host's clock then sees only restarts and retries).
        self._sweep_sleep = sweep_sleep or asyncio.sleep
        self._dispatch = dispatch
        self._running = running
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        claim_s = settings.queue_claim_ms / 1000
        self._store = IngressStore(db, history_per_plugin=settings.ingress_history_per_plugin,
                                   dedup_keys_per_plugin=settings.ingress_dedup_keys_per_plugin,
                                   dedup_keys_total=settings.ingress_dedup_keys_total, claim_s=claim_s)
        self._backoff = Backoff(settings.ingress_backoff_initial_ms / 1000, settings.ingress_backoff_max_ms / 1000)
        self._busy: dict[str, int] = {}  # plugin id → its attempts in flight
        # Hosts sharing the queue: look for what the others queued or left as often as for plugins
        # starting, and keep the claims of attempts in flight alive (see IngressStore).
        self._runner: QueueRunner[Delivery] = QueueRunner(
            due=self._due, next_due=self._next_due, attempt=self._attempt, key=lambda d: d.id,
            max_in_flight=settings.ingress_max_in_flight, clock=self._clock, name="ingress delivery",
            poll_s=min(_POLL_S, settings.queue_poll_ms / 1000) if db.shared else _POLL_S,
            renew=lambda ids: self._store.renew_claims(ids, self._clock.time()),
            renew_every_s=claim_s / 3 if db.shared else None)
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- start / stop --
    def start(self) -> None:
        """Start delivering (deliveries left pending by an earlier run included), and sweeping the
        expired `dedupOn` keys every `ingress_dedup_sweep_interval_ms`."""
        if self._task is None:
            self._task = asyncio.create_task(self._runner.run(), name="plugbox-ingress-queue")
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="plugbox-ingress-dedup-sweep")

    async def stop(self) -> None:
        """Stop delivering; attempts in flight are abandoned and stay pending for the next start (or,
        on a shared database, for another host at once: this host's claims are given up)."""
        task, self._task = self._task, None
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            try:
                await self._store.release_claims()
            except Exception as exc:  # they lapse by themselves within queue_claim_ms
                log.warning("ingress delivery: claims not given up at stop: %s", exc)

    async def _sweep_loop(self) -> None:
        """One task for the host: forget the `dedupOn` keys whose window ended, of every plugin."""
        every_s = self._settings.ingress_dedup_sweep_interval_ms / 1000
        while True:
            await self._sweep_sleep(every_s)
            try:
                swept = await self._store.sweep_expired(self._clock.time())
            except Exception as exc:  # the database is away: the next sweep takes them
                log.warning("ingress dedupOn keys: expired keys not swept: %s", exc)
                continue
            if swept:
                log.debug("ingress dedupOn keys: %d expired keys forgotten", swept)

    # -- the HTTP side --
    async def submit(self, plugin_id: str, instance_id: str, route: str, request: dict[str, Any],
                     dedup: DedupKey | None) -> Enqueued:
        """Queue a verified request; see `IngressStore.enqueue` for the outcomes."""
        delivery = NewDelivery(id=f"igd_{uuid.uuid4().hex}", plugin_id=plugin_id, instance_id=instance_id,
                               route=route, request=msgspec.msgpack.encode(request))
        outcome = await self._store.enqueue(
            delivery, dedup, self._clock.time(), plugin_max=self._settings.ingress_queue_max_per_plugin,
            route_max=self._settings.ingress_queue_max_per_route,
            bytes_max=self._settings.ingress_queue_max_bytes_per_plugin,
            host_bytes_max=self._settings.ingress_queue_max_bytes)
        if outcome.outcome == "queued":
            self._runner.wake()
        return outcome

    async def claim(self, plugin_id: str, dedup: DedupKey) -> bool:
        """A sync route's `dedupOn`: False if the key was seen within its window."""
        return await self._store.claim(plugin_id, dedup, self._clock.time())

    async def release(self, plugin_id: str, dedup: DedupKey) -> None:
        await self._store.release(plugin_id, dedup)

    # -- the runner's side --
    def _room(self) -> dict[str, int]:
        cap = self._settings.ingress_max_in_flight_per_plugin
        return {p: cap - self._busy.get(p, 0) for p in self._running() if self._busy.get(p, 0) < cap}

    async def _due(self, now: float, limit: int, skip: Collection[str]) -> list[Delivery]:
        return await self._store.claim_due(now, limit, skip, self._room())

    def _next_due(self, skip: Collection[str]) -> float | None:
        return self._store.next_due(skip, list(self._room()))

    async def _attempt(self, delivery: Delivery) -> None:
        self._busy[delivery.plugin_id] = self._busy.get(delivery.plugin_id, 0) + 1
        try:
            await self._attempt_once(delivery)
        except Exception as exc:  # a bug (or a row we cannot read): spend the attempt, never spin on it
            log.error("ingress delivery %s: attempt failed unexpectedly: %s", delivery.id, exc, exc_info=exc)
            await self._record(delivery, delivery.attempts + 1, None, f"internal error: {type(exc).__name__}")
        finally:
            left = self._busy[delivery.plugin_id] - 1
            if left:
                self._busy[delivery.plugin_id] = left
            else:
                del self._busy[delivery.plugin_id]

    async def _attempt_once(self, delivery: Delivery) -> None:
        attempt = delivery.attempts + 1
        request = msgspec.msgpack.decode(delivery.request)
        request.update(deliveryId=delivery.id, attempt=attempt)
        about = {"instanceId": delivery.instance_id, "deliveryId": delivery.id, "attempt": attempt,
                 "sessionId": request.get("sessionId")}
        reply = await self._dispatch(delivery.plugin_id, delivery.route, request,
                                     self._settings.ingress_delivery_budget_ms, about)
        status, error = _judge(reply)
        await self._record(delivery, attempt, status, error)

    async def _record(self, delivery: Delivery, attempt: int, status: int | None, error: str | None) -> None:
        now = self._clock.time()
        if error is None:
            await self._store.finish(delivery, DELIVERED, attempt, status, None, now)
            return
        if attempt >= self._settings.ingress_max_attempts:
            if await self._store.finish(delivery, DEAD, attempt, status, error, now):
                log.warning("ingress delivery %s to %s/%s dead-lettered after %d attempts: %s", delivery.id,
                            delivery.plugin_id, delivery.route, attempt, error)
            return
        await self._store.finish(delivery, PENDING, attempt, status, error, now,
                                 now + self._backoff.delay(attempt, self._rng))

    # -- the operator's side --
    def deliveries(self, plugin_id: str, *, state: str | None = None, limit: int = 100) -> list[Delivery]:
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        return self._store.deliveries(plugin_id, state=state, limit=limit)

    def delivery(self, plugin_id: str, delivery_id: str) -> Delivery | None:
        return self._store.get(plugin_id, delivery_id)

    async def replay(self, plugin_id: str, delivery_id: str) -> Delivery | None:
        """Re-queue a dead-lettered delivery (same id, attempts from zero); None if it is not dead."""
        if not await self._store.replay(plugin_id, delivery_id, self._clock.time()):
            return None
        self._runner.wake()
        return self._store.get(plugin_id, delivery_id)

    def pending_counts(self) -> dict[str, int]:
        return self._store.pending_counts()

    def dedup_keys_held(self) -> dict[str, int]:
        """`dedupOn` keys each plugin holds now (one read of a row per plugin)."""
        return self._store.dedup_keys_held()

    @property
    def dedup_evictions(self) -> dict[tuple[str, str], int]:
        """(plugin, reason) -> `dedupOn` keys this host evicted: `plugin` (past its own bound) or
        `total` (the host past `ingress_dedup_keys_total`, this plugin the furthest over its share)."""
        return dict(self._store.dedup.evicted)

    async def drop_plugin(self, plugin_id: str) -> None:
        await self._store.drop_plugin(plugin_id)


def _judge(reply: IngressReply) -> tuple[int | None, str | None]:
    """(status, error): error None when the plugin took the delivery (dispatch already judged a
    queued delivery's answer)."""
    if reply.outcome != "ok":
        return reply.status, reply.message[:_ERROR_MAX_CHARS]
    result = reply.result
    status = result.get("status", 200) if isinstance(result, dict) else 200
    return status if isinstance(status, int) else None, None


def public(delivery: Delivery) -> dict[str, Any]:
    """The API's view of a delivery: the request the handler gets, the rest as stored."""
    request = msgspec.msgpack.decode(delivery.request) if delivery.request else None  # delivered: dropped
    if isinstance(request, dict) and isinstance(request.get("body"), bytes):  # not UTF-8: JSON cannot hold it
        request["body"] = base64.b64encode(request["body"]).decode()
        request["bodyEncoding"] = "base64"
    return {"id": delivery.id, "pluginId": delivery.plugin_id, "instanceId": delivery.instance_id,
            "route": delivery.route, "state": delivery.state, "attempts": delivery.attempts,
            "nextAttemptAt": delivery.next_at if delivery.state == PENDING else None,
            "lastStatus": delivery.last_status, "lastError": delivery.last_error, "createdAt": delivery.created_at,
            "updatedAt": delivery.updated_at, "request": request}
