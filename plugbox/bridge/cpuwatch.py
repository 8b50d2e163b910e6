"""The CPU watchdog of one worker: kills a worker that keeps a CPU busy for a whole window.

The liveness check (runtime.py) catches an event loop stuck in a handler, but a plugin can also
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

    def __init__(self, pid: int, limit: float, window: float, on_runaway: Callable[[str], None]) -> None:
        self.pid = pid
        self.limit = limit
        self.window = window
        self._on_runaway = on_runaway
        self._timer: asyncio.TimerHandle | None = None
        self._last: tuple[float, float] | None = None  # (loop time, cpu seconds)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        used = cpu_seconds(self.pid)
        if used is not None:
            self._last = (loop.time(), used)
            self._timer = loop.call_later(self.window, self._check)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        used = cpu_seconds(self.pid)
        if used is None or self._last is None:
            return  # the process is gone: its death is reported elsewhere
        now = loop.time()
        then, used_then = self._last
        share = (used - used_then) / max(now - then, 1e-3)
        if share > self.limit:
            self._on_runaway(f"runaway: used {share:.0%} of a CPU over {now - then:.0f} s "
                             f"(the limit is {self.limit:.0%})")
            return
        self._last = (now, used)
        self._timer = loop.call_later(self.window, self._check)
