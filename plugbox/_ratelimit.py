"""Rate limits: a fixed-window counter (log lines, timeout warnings) and a token bucket (log bytes,
host CPU per worker channel, a plugin's sends).
Clocks injectable for tests."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RateLimiter", "TokenBucket"]


class RateLimiter:
    """Allows `limit` events per `window` seconds; counts what it refuses so callers can report it."""

    __slots__ = ("_clock", "_count", "_start", "dropped", "limit", "window")

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._start = clock()
        self._count = 0
        self.dropped = 0

    def allow(self) -> bool:
        now = self._clock()
        if now - self._start >= self.window:
            self._start = now
            self._count = 0
        if self._count < self.limit:
            self._count += 1
            return True
        self.dropped += 1
        return False


class TokenBucket:
    """Spends `cost` units out of at most `capacity`, refilled at `rate` units a second; counts
    what it refuses. (The log relay's byte budget: a burst is allowed, a sustained flood is not.)"""

    __slots__ = ("_clock", "_last", "_tokens", "capacity", "dropped", "rate")

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._last = clock()
        self._tokens = capacity
        self.dropped = 0

    def spend(self, cost: float) -> bool:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if cost <= self._tokens:
            self._tokens -= cost
            return True
        self.dropped += 1
        return False

    def reserve(self, cost: float, max_wait: float) -> float | None:
        """Spend `cost` now if the bucket will have it within `max_wait` seconds, going into debt
        meanwhile; the seconds to wait before using it (0.0: at once), or None, counted as refused,
        when the wait would be longer. Reservations queue: each waits behind the debt of those
        before it, so callers that sleep what they are told go out at the bucket's rate."""
        now = self._clock()
        tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        wait = max(0.0, cost - tokens) / self.rate
        if wait > max_wait:
            self._tokens = tokens
            self.dropped += 1
            return None
        self._tokens = tokens - cost
        return wait

    def charge(self, cost: float) -> float:
        """Spend `cost` whatever is left, going into debt; the seconds until the bucket is out of
        debt again (0.0: still within the budget). For work already done (host CPU a plugin
        made the host spend): it cannot be refused, only paid back by waiting."""
        now = self._clock()
        tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate) - cost
        self._tokens = tokens
        self._last = now
        return -tokens / self.rate if tokens < 0 else 0.0
