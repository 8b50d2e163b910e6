"""A host-wide total that per-plugin budgets share, and who pays when it is overspent.

Per-plugin budgets add up: each plugin's channel may take half a CPU of the host's loop, each may
put 480 KiB a minute into the host's log, and three plugins (or three hundred) at their full share
ask for more than the host has. A `RateTotal` bounds the sum: all plugins together may spend
`rate` units a second (with a burst), and when that total is overspent, the plugins that pay are
the ones taking more than a fair share of it (the rate divided by the plugins that spent in the
last `window` seconds). A plugin within its fair share is never paused or refused for what others
spend. Two ways to spend:
- `charge`: for work already done (host CPU a plugin's frames took): it cannot be refused, so the
  answer is how long that plugin must pause (0.0 within its fair share);
- `admit`: for work not yet done (a log line): refused, and not charged, when the total is in debt
  and the plugin is over its fair share.

Usage per plugin is an exponentially decayed sum of what it spent (time constant `window`), so a
plugin that stops spending drops out of the count of active plugins after a few windows and a
burst long ago weighs nothing. The estimate lags: a plugin that starts spending fast reaches its
full rate in the estimate after about one window, so the total can be overspent by about one
window of it (on top of the burst) before the fair shares bite. The active set is kept in order
of last spend, so finding who is active is amortized O(1) per spend (1,000 channels charge
thousands of times a second under load); a fair-share decision is made only when the total is
overspent.

Hand-written: a small policy over `TokenBucket`, not something a library provides.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from plugbox._ratelimit import TokenBucket

__all__ = ["RateTotal", "RateTotalStats"]


@dataclass(frozen=True, slots=True)
class RateTotalStats:
    active: int  # plugins that spent within the last few windows
    debt_s: float  # seconds until the shared bucket is out of debt (0: within the total)
    over_share: dict[str, int]  # plugin -> times it was paused or refused for taking more than its fair share


class RateTotal:
    """The host-wide bucket all plugins spend from, and who pays when it is overspent."""

    def __init__(self, rate: float, burst: float, *, window: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst <= 0 or window <= 0:
            raise ValueError("rate, burst and window must be positive")
        self.rate = rate  # units a second all plugins may spend together (CPUs for host CPU)
        self.window = window
        self._clock = clock
        self._bucket = TokenBucket(rate, burst, clock)
        self._usage: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (decayed s, at)
        self._debt = 0.0
        self._over: dict[str, int] = {}

    def charge(self, key: str, spent: float) -> float:
        """Charge `spent` units already spent for plugin `key`; the seconds it must pause for the
        shared total (0.0: none, always so while it is within its fair share)."""
        used = self._spend(key, spent)
        self._debt = self._bucket.charge(spent)
        if self._debt <= 0 or not self._over_share(key, used):
            return 0.0
        self._over[key] = self._over.get(key, 0) + 1
        return self._debt

    def admit(self, key: str, cost: float) -> bool:
        """Spend `cost` units for plugin `key` if the total allows it: refused (and not charged)
        while the total is in debt and the plugin is over its fair share."""
        used = self._decayed(key, self._clock()) + cost
        if self._bucket.charge(0.0) > 0 and self._over_share(key, used):
            self._over[key] = self._over.get(key, 0) + 1
            return False
        self.charge(key, cost)
        return True

    def _spend(self, key: str, spent: float) -> float:
        now = self._clock()
        used = self._decayed(key, now) + spent
        self._usage[key] = (used, now)
        self._usage.move_to_end(key)
        self._expire(now)
        return used

    def _over_share(self, key: str, used: float) -> bool:
        active = len(self._usage) + (key not in self._usage)
        fair = self.rate / active  # what each active plugin is sure of, a second
        return used / self.window > fair

    def forget(self, key: str) -> None:
        """The plugin is gone (its channel closed): it no longer counts as active."""
        self._usage.pop(key, None)
        self._over.pop(key, None)

    def usage(self, key: str) -> float:
        """What it spent lately, in units a second (for host CPU: CPUs)."""
        return self._decayed(key, self._clock()) / self.window

    def stats(self) -> RateTotalStats:
        self._expire(self._clock())
        return RateTotalStats(active=len(self._usage), debt_s=max(self._debt, 0.0), over_share=dict(self._over))

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
