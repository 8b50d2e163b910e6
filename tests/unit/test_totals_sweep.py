"""The host's one periodic sweep of its books (plugbox/totals/sweep.py): one timer, re-armed after
every tick, a tick that fails logged and counted without stopping it, and nothing more once closed.
The loop's call_later is replaced by a fake: the test runs each tick by hand."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from plugbox.totals.sweep import Sweep


class FakeTimer:
    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay = delay
        self.callback = callback
        self.cancelled = False
        self.fired = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """Records the timers armed; `fire()` runs the last one, as the loop would once it is due."""

    def __init__(self) -> None:
        self.armed: list[FakeTimer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(delay, callback)
        self.armed.append(timer)
        return timer

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.armed if not t.cancelled and not t.fired]

    def fire(self) -> None:
        timer = self.armed[-1]
        assert not timer.cancelled and not timer.fired
        timer.fired = True
        timer.callback()


def _sweep(tick: Callable[[], None], timers: Timers, period: float = 0.2) -> Sweep:
    return Sweep(tick, period, call_later=timers.call_later)  # type: ignore[arg-type]


def test_one_timer_ticks_every_period_until_closed() -> None:
    ticks: list[int] = []
    timers = Timers()
    sweep = _sweep(lambda: ticks.append(1), timers)
    sweep.start()
    sweep.start()  # started twice: still one timer
    assert [t.delay for t in timers.pending()] == [0.2]
    for _ in range(3):
        timers.fire()
    assert len(ticks) == 3 and len(timers.armed) == 4  # re-armed after each tick
    sweep.close()
    sweep.close()
    assert timers.pending() == [] and len(ticks) == 3


def test_a_tick_that_fails_is_logged_and_counted_and_the_sweep_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def tick() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a holder's bug")

    timers = Timers()
    sweep = _sweep(tick, timers)
    sweep.start()
    timers.fire()
    timers.fire()
    assert len(calls) == 2 and sweep.failures == 1
    assert "periodic sweep of the host-wide books failed" in caplog.text
    assert len(timers.pending()) == 1


def test_closed_during_a_tick_it_arms_no_other() -> None:
    timers = Timers()
    sweep: Sweep | None = None

    def tick() -> None:
        assert sweep is not None
        sweep.close()  # (the host stopping from inside a reclaim's callback)

    sweep = _sweep(tick, timers)
    sweep.start()
    timers.fire()
    assert len(timers.armed) == 1


def test_a_period_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Sweep(lambda: None, 0)
