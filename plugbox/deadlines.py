"""Deadlines for many short waits, served by one sweep timer instead of a timer each.

`Deadlines.within(budget)` is a `with` block with `asyncio.timeout`'s meaning: once `budget` has
passed, the task waiting inside it is cancelled and the block raises TimeoutError. The difference
is the cost: `asyncio.timeout` arms and cancels a loop timer per use (about 5 µs under uvloop, as
much as a whole pipelined hook dispatch), where a deadline here is an entry in a dict that one
periodic sweep walks. The price is precision: a deadline fires up to one sweep period late (a
twentieth of the shortest budget in use, between 5 and 100 ms).

`Deadlines.watch(fut, at)` puts the same deadline on a future nobody awaits (a hook handler
the bus launched and went on from): at `at` the future is cancelled and the deadline says it
expired; it is forgotten as soon as the future is done.

The clock is injectable so tests can move time by hand and call `sweep()` themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["Deadlines"]

MIN_PERIOD_S = 0.005
MAX_PERIOD_S = 0.1


class _Deadline:
    __slots__ = ("_owner", "_task", "at", "expired")

    def __init__(self, owner: Deadlines, at: float) -> None:
        self._owner = owner
        self.at = at
        self.expired = False
        self._task: asyncio.Future[Any] | None = None  # a task inside the block, or a watched future

    def __enter__(self) -> _Deadline:
        # (`_start` inlined: this is on the path of every hook dispatch)
        owner = self._owner
        self._task = asyncio.current_task()
        owner._entries[self] = None
        if owner._timer is None or self.at < owner._next_sweep:
            owner._arm(self.at)
        return self

    def _start(self, target: asyncio.Future[Any] | None) -> None:
        owner = self._owner
        self._task = target
        owner._entries[self] = None
        if owner._timer is None or self.at < owner._next_sweep:
            owner._arm(self.at)

    def _forget(self, _fut: object = None) -> None:
        self._owner._entries.pop(self, None)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._owner._entries.pop(self, None)  # (already gone if it expired)
        if self.expired and exc_type is asyncio.CancelledError and isinstance(self._task, asyncio.Task):
            self._task.uncancel()
            raise TimeoutError from exc

    def _expire(self) -> None:
        self.expired = True
        if self._task is not None:
            self._task.cancel()


class Deadlines:
    def __init__(self, clock: Callable[[], float] | None = None, *, autosweep: bool = True) -> None:
        self._clock = clock  # None: the running loop's clock
        self._autosweep = autosweep  # False in tests that call sweep() after moving their clock
        self._entries: dict[_Deadline, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._next_sweep = 0.0
        self._period = MAX_PERIOD_S

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def clock(self) -> Callable[[], float]:
        """The clock deadlines are measured on (the loop's, or the injected one), for callers that
        read it often in one go and then say when with `until`/`watch`."""
        return self._clock if self._clock is not None else asyncio.get_running_loop().time

    def within(self, budget: float) -> _Deadline:
        """A block that raises TimeoutError once `budget` seconds have passed inside it."""
        return _Deadline(self, self._now() + budget)

    def until(self, at: float) -> _Deadline:
        """A block that raises TimeoutError once the clock reaches `at`."""
        return _Deadline(self, at)

    def watch(self, fut: asyncio.Future[Any], at: float) -> _Deadline:
        """Cancel `fut` once the clock reaches `at`, unless it is done by then; the returned
        deadline's `expired` tells a cancellation by the deadline from any other."""
        deadline = _Deadline(self, at)
        deadline._start(fut)
        fut.add_done_callback(deadline._forget)
        return deadline

    def _arm(self, at: float) -> None:
        """Make sure a sweep comes by `at` (the first deadline, or one sooner than the next sweep)."""
        now = self._now()
        self._period = min(self._period, max(MIN_PERIOD_S, min(MAX_PERIOD_S, (at - now) / 20)))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._autosweep:
            self._next_sweep = min(at, now + self._period)
            self._timer = asyncio.get_running_loop().call_later(self._next_sweep - now, self._tick)
        else:
            self._next_sweep = float("inf")  # never re-armed: the test sweeps

    def _tick(self) -> None:
        self._timer = None
        self.sweep()
        if self._entries:
            now = self._now()
            self._next_sweep = now + self._period
            self._timer = asyncio.get_running_loop().call_later(self._period, self._tick)
        else:
            self._period = MAX_PERIOD_S

    def sweep(self) -> int:
        """Cancel every block past its deadline; how many."""
        now = self._now()
        due = [d for d in self._entries if d.at <= now]
        for d in due:
            del self._entries[d]
            d._expire()
        return len(due)

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
