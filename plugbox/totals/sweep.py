"""One periodic timer for the whole host that has the host-wide books measured.

Some bytes a holder keeps grow with nothing to charge them: a worker that reads its channel just
slowly enough leaves the host a write buffer below the high-water mark, which no pause ever sees
(plugbox.totals.held, `measure`). One `Sweep` per host calls the books' `measure()` every
`period` seconds, for every live channel at once: not a timer per channel, since a host runs a
thousand workers. A tick with every queue empty costs one short call per channel and charges
nothing; it never touches the path of a frame.

The host owns it: `start()` in `Host.start`, `close()` in `Host.stop`. The loop's `call_later`
is injectable so that tests can run the ticks by hand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

__all__ = ["Sweep"]

log = logging.getLogger("plugbox.totals")

CallLater = Callable[[float, Callable[[], None]], asyncio.TimerHandle]


class Sweep:
    """Calls `tick` every `period` seconds from `start()` until `close()` (safe to call twice)."""

    def __init__(self, tick: Callable[[], None], period: float, *, call_later: CallLater | None = None) -> None:
        if period <= 0:
            raise ValueError(f"a sweep period must be positive, got {period}")
        self.period = period
        self._tick = tick
        self._call_later = call_later
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.failures = 0  # ticks that raised (logged; the sweep goes on)

    def start(self) -> None:
        """Arm the first tick (in the running loop, unless a `call_later` was given)."""
        self._closed = False
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        call_later = self._call_later or asyncio.get_running_loop().call_later
        self._timer = call_later(self.period, self._run)

    def _run(self) -> None:
        try:
            self._tick()
        except Exception:  # a holder's bug must not stop the host's books from being measured
            self.failures += 1
            log.exception("the periodic sweep of the host-wide books failed (%d so far)", self.failures)
        if not self._closed:
            self._arm()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
