"""The delivery worker: takes due deliveries off the queue, signs and sends them, and records each
attempt's outcome (delivered, retry later with backoff, or dead-lettered), firing the `webhook:*`
hooks of an attempt (`delivered`, `error`, `after`).

The scheduling is `plugbox.queue.QueueRunner`, shared with the ingress queue: one task owns every
attempt, at most `webhook_max_in_flight` at once, and sleeps until the earliest pending delivery
falls due or `wake()` is called (enqueue, replay, a finished attempt). Sending goes through `Sender`;
the host's sender is `GuardedSender`, the `net.fetch` service itself (same URL rules, resolved
addresses all public unless the operator exempts the host, pinned connection, no redirects, timeout,
answer size cap), with its own slots.
This module does not decide what is delivered (that is `service`) and holds no SQL (`store`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from plugbox.errors import CapabilityError
from plugbox.lifecycle.clock import Clock
from plugbox.net.allowlist import HostList
from plugbox.net.fetch import FetchPolicy, FetchService
from plugbox.queue import Backoff, QueueRunner
from plugbox.settings import Settings
from plugbox.webhooks import signing
from plugbox.webhooks.store import DEAD, DELIVERED, PENDING, Delivery, WebhookStore
from plugbox.webhooks.subscriptions import Subscription

__all__ = ["Backoff", "DeliveryWorker", "GuardedSender", "Sender"]

log = logging.getLogger("plugbox.webhooks")

Fire = Callable[[str, dict[str, Any], "str | None", "str | None"], Awaitable[object]]
_ERROR_MAX_CHARS = 500


class Sender(Protocol):
    async def __call__(self, url: str, headers: dict[str, str], body: bytes) -> int:
        """POST `body` to `url`; the answer's status. Raises CapabilityError when no answer came."""


class GuardedSender:
    """Delivery through `FetchService`: the guard of `net.fetch`, not a second one. The policy allows
    any host (the operator chose the URL); the address rule and `fetch_exempt_hosts` apply as for a
    plugin. It has its own slots, timeout and answer cap (the `webhook_*` settings), so deliveries and
    plugins' fetches do not wait on each other."""

    def __init__(self, settings: Settings) -> None:
        own = msgspec.structs.replace(
            settings,
            fetch_max_in_flight=settings.webhook_max_in_flight,
            fetch_timeout_ms=settings.webhook_timeout_ms,
            fetch_timeout_max_ms=settings.webhook_timeout_ms,
            fetch_body_max_bytes=settings.webhook_response_max_bytes,
        )
        policy = FetchPolicy(allow=HostList(any_host=True))
        self._fetch = FetchService(own, lambda _caller: policy)

    async def __call__(self, url: str, headers: dict[str, str], body: bytes) -> int:
        result = await self._fetch.fetch("webhooks", url, method="POST",
                                         headers={**headers, "Content-Type": "application/json"}, body=body)
        status: int = result["status"]
        return status


class DeliveryWorker:
    def __init__(
        self,
        store: WebhookStore,
        subscription: Callable[[str], Subscription | None],
        sender: Sender,
        fire: Fire,
        *,
        max_attempts: int,
        backoff: Backoff,
        max_in_flight: int,
        clock: Clock,
        rng: random.Random,
        poll_s: float | None = None,
        claim_s: float | None = None,
    ) -> None:
        """`poll_s` and `claim_s` only where hosts share the queue: how often to look for rows other
        hosts queued or left, and how long a claim lasts (renewed every third of it)."""
        self._store = store
        self._subscription = subscription
        self._send = sender
        self._fire = fire
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._clock = clock
        self._rng = rng
        self._runner: QueueRunner[Delivery] = QueueRunner(
            due=store.claim_due, next_due=store.next_due, attempt=self._attempt_once, key=lambda d: d.id,
            max_in_flight=max_in_flight, clock=clock, name="webhook delivery", poll_s=poll_s,
            renew=lambda ids: store.renew_claims(ids, clock.time()),
            renew_every_s=None if claim_s is None else claim_s / 3)

    def wake(self) -> None:
        self._runner.wake()

    async def run(self) -> None:
        """Deliver until cancelled. Cancelling cancels the attempts in flight; their rows stay
        `pending` and are attempted again by the next worker (same delivery id), at once: this
        worker's claims are given up."""
        try:
            await self._runner.run()
        finally:
            try:
                await self._store.release_claims()
            except Exception as exc:  # they lapse by themselves within claim_s
                log.warning("webhook delivery: claims not given up at stop: %s", exc)

    async def _attempt_once(self, delivery: Delivery) -> None:
        sub = self._subscription(delivery.subscription_id)
        if sub is None:
            return  # deleted meanwhile; its rows went with it
        attempt = delivery.attempts + 1
        status: int | None = None
        error: str | None = None
        try:
            headers = signing.headers(sub.secret, delivery.id, self._clock.time(), delivery.body)
            status = await self._send(sub.url, headers, delivery.body)
            if not 200 <= status < 300:
                error = f"receiver answered HTTP {status}"
        except CapabilityError as exc:  # refused by the guard, unreachable, timed out, answer too large
            error = str(exc)[:_ERROR_MAX_CHARS]
        now = self._clock.time()
        about = {"deliveryId": delivery.id, "subscriptionId": delivery.subscription_id, "event": delivery.event,
                 "attempt": attempt, "status": status}
        if error is None:
            if await self._store.finish(delivery.id, DELIVERED, attempt, status, None, now):
                await self._fire("webhook:delivered", about, delivery.session_id, delivery.cause)
                await self._fire("webhook:after", {**about, "outcome": DELIVERED}, delivery.session_id, delivery.cause)
            return
        if attempt >= self._max_attempts:
            if await self._store.finish(delivery.id, DEAD, attempt, status, error, now):
                log.warning("webhook delivery %s dead-lettered after %d attempts: %s", delivery.id, attempt, error)
                await self._fire("webhook:error", {**about, "error": error, "willRetry": False}, delivery.session_id,
                                 delivery.cause)
                await self._fire("webhook:after", {**about, "outcome": DEAD}, delivery.session_id, delivery.cause)
            return
        next_at = now + self._backoff.delay(attempt, self._rng)
        if await self._store.finish(delivery.id, PENDING, attempt, status, error, now, next_at):
            await self._fire("webhook:error", {**about, "error": error, "willRetry": True, "nextAttemptAt": next_at},
                             delivery.session_id, delivery.cause)
