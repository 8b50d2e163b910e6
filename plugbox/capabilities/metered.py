"""Host time a capability call takes on the event loop, measured step by step, so that it can be
charged to the plugin that made the call.

A verb that waits (a send, an engine read, a storage write, a fetch) runs as a task of its own,
after the bridge's read batch that received it has been charged; whatever it then computes on
the loop (building a long list of chats, running built-in hook handlers, encoding) would
otherwise be charged to nobody. `metered(coro, charge)` runs `coro` and tells `charge` how long
each of its steps held the loop: the time between being resumed and yielding again, never the
time it spent waiting (a thread, the network, another task). Measured as the loop thread's CPU
time, like the channel's read batches: while another process has the CPU, nobody is charged.

Owns nothing but that measurement; must not decide what a plugin may spend (the channel's CPU
bucket does, told through `charge`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["Charge", "metered"]

T = TypeVar("T")

Charge = Callable[[float], None]  # told the seconds one step of a call held the loop


class _Metered:
    __slots__ = ("_charge", "_clock", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, Any], charge: Charge, clock: Callable[[], float]) -> None:
        self._coro = coro
        self._charge = charge
        self._clock = clock

    def __await__(self) -> Generator[Any, Any, Any]:
        # Drives the coroutine by hand, as a Task would, to time each step: what it yields (a
        # future it waits on) goes up to the task, what the task sends or throws goes back down.
        coro, charge, clock = self._coro, self._charge, self._clock
        value: Any = None
        error: BaseException | None = None
        while True:
            started = clock()
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                charge(clock() - started)
                return stop.value
            except BaseException:
                charge(clock() - started)
                raise
            charge(clock() - started)
            try:
                value = yield yielded
                error = None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # CancelledError too: the coroutine decides what it means
                value, error = None, exc


async def metered(coro: Coroutine[Any, Any, T], charge: Charge,
                  clock: Callable[[], float] = time.thread_time) -> T:
    """Run `coro`, telling `charge` the loop time of each of its steps."""
    result: T = await _Metered(coro, charge, clock)
    return result
