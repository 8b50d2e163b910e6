"""Liveness of one worker's event loop, checked after a hook ran past its budget.

Ping; no pong within the window means the worker's event loop is stuck: it is ended. A pong alone
proves little: while a sync handler spins, a plugin thread can read the ping off the channel and
forge the answer. What it cannot forge is the scheduler's account of the event-loop thread, so the
check watches that thread for the whole window: an idle loop (an async handler that merely waits,
asleep in epoll) stays; one that was runnable throughout — on a CPU or waiting in the run queue for
one, so a busy machine does not hide it — is a runaway.

One check at a time; `stop()` cancels the one running. The clock is injectable: the window is
measured with it, and the waits go through `sleep`, so a test can drive both by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from plugbox.errors import WorkerGone

__all__ = ["LOOP_BUSY_KILL", "Liveness", "loop_thread_runnable"]

LOOP_BUSY_KILL = 0.9  # share of a liveness window the event-loop thread may stay runnable


def loop_thread_runnable(pid: int) -> float | None:
    """Seconds the main (event-loop) thread of `pid` spent on a CPU or in the run queue
    (/proc schedstat); None if unreadable."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            on_cpu_ns, waiting_ns, _slices = f.read().split()
    except (OSError, ValueError):
        return None
    return (int(on_cpu_ns) + int(waiting_ns)) / 1e9


class Liveness:
    def __init__(
        self,
        ping: Callable[[], Awaitable[None]],
        runnable: Callable[[], float | None],
        window: float,
        on_dead: Callable[[str], None],
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._ping = ping
        self._runnable = runnable
        self.window = window
        self._on_dead = on_dead
        self._clock = clock
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None

    @property
    def checking(self) -> bool:
        return self._task is not None

    def check(self) -> None:
        """Start a check unless one is running."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._check())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def _check(self) -> None:
        started, before = self._now(), self._runnable()
        try:
            pong = asyncio.ensure_future(self._ping())
            window = asyncio.ensure_future(self._sleep(self.window))
            await asyncio.wait({pong, window}, return_when=asyncio.FIRST_COMPLETED)
            window.cancel()
            if not pong.done():
                pong.cancel()
                self._on_dead(f"unresponsive: no answer to the liveness ping within {self.window:g} s")
                return
            pong.result()
            await self._sleep(max(0.0, started + self.window - self._now()))
            after = self._runnable()
            if before is not None and after is not None:
                busy = (after - before) / max(self._now() - started, 1e-3)
                if busy >= LOOP_BUSY_KILL:
                    self._on_dead(f"runaway: its event loop stayed runnable ({busy:.0%}) for the whole "
                                  f"{self.window:g} s liveness window after a hook ran past its budget")
        except WorkerGone:
            pass  # the worker died meanwhile: the channel reports that death
        finally:
            if self._task is asyncio.current_task():  # (not a newer check started after a stop())
                self._task = None
