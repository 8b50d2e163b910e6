"""The engine shared by plugbox's durable queues (outbound webhooks, ingress deliveries): when to try an
item again (`Backoff`) and the loop that runs due items with bounded concurrency (`QueueRunner`).

What it owns: scheduling only. It asks its queue for due items, runs at most `max_in_flight` attempts at
once, each as a task it owns, and sleeps until the earliest item falls due or `wake()` is called. What an
attempt does, and how its outcome is recorded (delivered, retried, dead-lettered), belongs to the queue
that uses it; so do the tables (each queue keeps its SQL in its own `store` module). Nothing here touches
a database, the network or a plugin.

On a database several hosts share, a queue's `due` claims what it returns (no other host attempts
those items while the claim lasts), and the runner keeps the claims of its attempts alive: every
`renew_every_s` it hands the keys in flight to the queue's `renew`. A host that dies stops renewing,
so its claims lapse and another host's runner takes the items.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Collection
from typing import Generic, TypeVar

import msgspec

from plugbox.lifecycle.clock import Clock

__all__ = ["Backoff", "QueueRunner"]

log = logging.getLogger("plugbox.queue")

Item = TypeVar("Item")


class Backoff(msgspec.Struct, frozen=True):
    """Exponential backoff with "equal jitter": the n-th retry waits between half and all of
    min(max, initial * 2**(n-1)). Half is kept so retries still back off; the random half spreads a
    burst of failures so they do not all retry at the same instant."""

    initial_s: float
    max_s: float

    def delay(self, failed_attempts: int, rng: random.Random) -> float:
        base = min(self.max_s, self.initial_s * 2 ** min(failed_attempts - 1, 62))
        return float(base / 2 + rng.uniform(0, base / 2))


class QueueRunner(Generic[Item]):
    """Runs a queue's due items until cancelled.

    - `due(now, limit, busy)`: up to `limit` items due at `now`, none of whose keys is in `busy`
      (claimed for this runner where hosts share the queue);
    - `next_due(busy)`: when the earliest other item falls due (epoch seconds), or None;
    - `attempt(item)`: one attempt, recording its own outcome; an exception is logged and the item
      stays where the queue left it (normally: pending, attempted again later);
    - `key(item)`: the item's id, so an item in flight is never started twice;
    - `poll_s`: the longest sleep (None: sleep until woken or due). A queue whose `due` may hold back
      items for reasons of its own (a plugin not running yet) sets it, since nothing wakes the runner
      when that reason goes away, and so does a queue other hosts add to;
    - `renew(keys)`, every `renew_every_s` while attempts run: extend the claims on those items.

    A `due`, `next_due` or `renew` that fails (the database is away) is logged and tried again after
    `retry_s`; the runner itself carries on.
    """

    def __init__(
        self,
        *,
        due: Callable[[float, int, Collection[str]], Awaitable[list[Item]]],
        next_due: Callable[[Collection[str]], float | None],
        attempt: Callable[[Item], Awaitable[None]],
        key: Callable[[Item], str],
        max_in_flight: int,
        clock: Clock,
        name: str,
        poll_s: float | None = None,
        renew: Callable[[Collection[str]], Awaitable[None]] | None = None,
        renew_every_s: float | None = None,
        retry_s: float = 1.0,
    ) -> None:
        self._due = due
        self._next_due = next_due
        self._attempt_one = attempt
        self._key = key
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._name = name
        self._poll_s = poll_s
        self._renew = renew
        self._renew_every_s = renew_every_s
        self._retry_s = retry_s
        self._wake = asyncio.Event()
        self.in_flight: set[str] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Run until cancelled. Cancelling cancels the attempts in flight; what they had not recorded
        stays as the queue has it, to be attempted again by the next runner."""
        async with asyncio.TaskGroup() as attempts:
            if self._renew is not None and self._renew_every_s is not None:
                attempts.create_task(self._renew_loop(self._renew, self._renew_every_s))
            while True:
                self._wake.clear()
                try:
                    await self._start_due(attempts)
                    wait = self._wait()
                except Exception as exc:  # the database is away: keep what runs, look again later
                    log.error("%s: cannot read the queue: %s", self._name, exc)
                    wait = self._retry_s
                await self._sleep(wait)

    async def _start_due(self, attempts: asyncio.TaskGroup) -> None:
        free = self._max_in_flight - len(self.in_flight)
        if free > 0:
            for item in await self._due(self._clock.time(), free, frozenset(self.in_flight)):
                self.in_flight.add(self._key(item))
                attempts.create_task(self._attempt(item))

    def _wait(self) -> float | None:
        # Full: only the end of an attempt (which wakes us) can make room.
        due = None if len(self.in_flight) >= self._max_in_flight else self._next_due(frozenset(self.in_flight))
        wait = None if due is None else max(due - self._clock.time(), 0.0)
        if self._poll_s is not None:
            wait = self._poll_s if wait is None else min(wait, self._poll_s)
        return wait

    async def _renew_loop(self, renew: Callable[[Collection[str]], Awaitable[None]], every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            if not self.in_flight:
                continue
            try:
                await renew(frozenset(self.in_flight))
            except Exception as exc:  # claims not renewed may lapse: another host may then attempt them too
                log.error("%s: claims on %d items not renewed: %s", self._name, len(self.in_flight), exc)

    async def _sleep(self, wait: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._wake.wait()

    async def _attempt(self, item: Item) -> None:
        key = self._key(item)
        try:
            await self._attempt_one(item)
        except Exception as exc:  # a bug here must not stop the runner; the item stays pending
            log.error("%s %s: attempt failed unexpectedly: %s", self._name, key, exc, exc_info=exc)
        finally:
            self.in_flight.discard(key)
            self._wake.set()
