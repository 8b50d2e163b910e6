"""A fixed-window rate limiter (log relay, timeout warnings). Clock injectable for tests."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


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
