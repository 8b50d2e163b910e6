"""The lifecycle's clock: the only way the manager reads the time or waits.

Injected so that restart backoff and record timestamps can be tested without real sleeps
(`tests/unit/test_lifecycle_failures.py` drives a manual clock). Budgets around plugin calls are not
clock reads: they are `asyncio.timeout` scopes on the running loop, visible at each call site.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (stamped on persisted records)."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (restart backoff). Cancellable."""


class SystemClock:
    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
