"""The CPU watchdog of one worker: kills a worker that keeps a CPU busy for a whole window.

The liveness check (liveness.py) catches an event loop stuck in a handler, but a plugin can also
burn CPU from a thread of its own while its event loop answers every hook and ping on time. The
watchdog reads the worker's CPU time (all its threads: utime + stime in /proc/<pid>/stat) once per
window; more than `limit` of one CPU over a window (two threads at 100% count as 200%) ends the
worker, which the manager restarts with backoff and, if it keeps doing it, leaves in `error`.

A sustained share is what is judged, not a burst: a handler that computes for a second inside a
10-second window stays well under the limit. Reading /proc is a few microseconds per worker per
window; no process is signalled except the one that ran away.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

__all__ = ["CpuWatch", "cpu_seconds"]

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """CPU time `pid` has used so far (user + system, all threads); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its closing one.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime: fields 14 and 15 of stat


class CpuWatch:
    """Call `on_runaway(reason)` once the process used more than `limit` CPUs (0.9: 90 % of one)
    over one `window` (seconds). `start` arms it; `stop` disarms it for good."""

    def __init__(self, pid: int, limit: float, window: float, on_runaway: Callable[[str], None], *,
                 clock: Callable[[], float] | None = None,
                 cpu: Callable[[int], float | None] = cpu_seconds) -> None:
        self.pid = pid
        self.limit = limit
        self.window = window
        self._on_runaway = on_runaway
        self._clock = clock  # None: the event loop's clock
        self._cpu = cpu
        self._timer: asyncio.TimerHandle | None = None
        self._last: tuple[float, float] | None = None  # (clock time, cpu seconds)
        self._stopped = False

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def start(self) -> None:
        used = self._cpu(self.pid)
        if used is not None:
            self._last = (self._now(), used)
            self._timer = asyncio.get_running_loop().call_later(self.window, self.check)

    def stop(self) -> None:
        self._stopped = True
        self._disarm()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def check(self) -> None:
        """Judge the window that just ended (the timer calls this; a test may, after moving its
        clock) and arm the next one unless the process ran away or is gone."""
        self._disarm()
        used = self._cpu(self.pid)
        if used is None or self._last is None or self._stopped:
            return  # the process is gone: its death is reported elsewhere
        now = self._now()
        then, used_then = self._last
        share = (used - used_then) / max(now - then, 1e-3)
        if share > self.limit:
            self._stopped = True  # reported once; the process is about to end
            self._on_runaway(f"runaway: used {share:.0%} of a CPU over {now - then:.0f} s "
                             f"(the limit is {self.limit:.0%})")
            return
        self._last = (now, used)
        self._timer = asyncio.get_running_loop().call_later(self.window, self.check)
