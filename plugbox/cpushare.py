"""Host CPU that every plugin's channel takes together, shared fairly among the plugins using it.

Each channel already has a CPU bucket of its own (`channel_cpu_percent`, half a CPU by default): one
plugin cannot take the event loop. But per-plugin shares add up: three plugins at half a CPU each
ask for more than the loop has, and then every other plugin's messages and the host's own work wait
behind them. `CpuShare` bounds the sum: all channels together may take `channel_cpu_total_percent`
of a CPU (with a burst), and when that total is overspent, the plugins paused are the ones taking
more than a fair share of it (the total divided by the plugins that used host CPU in the last
`window` seconds). A plugin within its fair share is never paused because of what others spend.

Usage per plugin is an exponentially decayed sum of the CPU seconds charged to it (time constant
`window`), so a plugin that stops spending drops out of the count of active plugins after about
`window` seconds and a burst long ago weighs nothing. The active set is kept in order of last
charge, so finding who is active is amortized O(1) per charge (1,000 channels charge thousands of
times a second under load); a fair-share decision is made only when the total is overspent.

Hand-written: it is a small policy over `TokenBucket`, not something a library provides.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from plugbox._ratelimit import TokenBucket

__all__ = ["CpuShare", "CpuShareStats"]


@dataclass(frozen=True, slots=True)
class CpuShareStats:
    active: int  # plugins that used host CPU within the window
    debt_s: float  # seconds until the shared bucket is out of debt (0: within the total)
    paused: dict[str, int]  # plugin -> times it was paused for taking more than its fair share


class CpuShare:
    """The host-wide CPU bucket of all channels, and who pays when it is overspent."""

    def __init__(self, share: float, burst: float, *, window: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if share <= 0 or burst <= 0 or window <= 0:
            raise ValueError("share, burst and window must be positive")
        self.share = share  # CPUs all channels may take together
        self.window = window
        self._clock = clock
        self._bucket = TokenBucket(share, burst, clock)
        self._usage: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (decayed s, at)
        self._debt = 0.0
        self._paused: dict[str, int] = {}

    def charge(self, key: str, spent: float) -> float:
        """Charge `spent` seconds of host CPU taken for plugin `key`; the seconds its channel must
        pause for the shared total (0.0: none, always so while it is within its fair share)."""
        now = self._clock()
        used = self._decayed(key, now) + spent
        self._usage[key] = (used, now)
        self._usage.move_to_end(key)
        self._expire(now)
        self._debt = self._bucket.charge(spent)
        if self._debt <= 0:
            return 0.0
        fair = self.share / len(self._usage)  # CPUs each active plugin is sure of
        if used / self.window <= fair:
            return 0.0
        self._paused[key] = self._paused.get(key, 0) + 1
        return self._debt

    def forget(self, key: str) -> None:
        """The plugin's channel is gone: it no longer counts as active."""
        self._usage.pop(key, None)
        self._paused.pop(key, None)

    def usage(self, key: str) -> float:
        """Its recent host CPU, in CPUs (decayed CPU seconds over the window)."""
        return self._decayed(key, self._clock()) / self.window

    def stats(self) -> CpuShareStats:
        self._expire(self._clock())
        return CpuShareStats(active=len(self._usage), debt_s=max(self._debt, 0.0), paused=dict(self._paused))

    def _decayed(self, key: str, now: float) -> float:
        entry = self._usage.get(key)
        if entry is None:
            return 0.0
        used, at = entry
        return used * math.exp(-(now - at) / self.window)

    def _expire(self, now: float) -> None:
        # Oldest charge first: a plugin silent for a few windows has decayed to nothing.
        horizon = now - 4 * self.window
        while self._usage:
            key, (_used, at) = next(iter(self._usage.items()))
            if at >= horizon:
                return
            del self._usage[key]
