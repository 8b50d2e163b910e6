"""Deadlines: `within(budget)` means asyncio.timeout(budget), for many waits on one sweep timer."""

from __future__ import annotations

import asyncio

import pytest

from plugbox.deadlines import Deadlines


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_wait_past_its_budget_raises_timeout_and_the_task_goes_on() -> None:
    clock = Clock()
    deadlines = Deadlines(clock, autosweep=False)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def wait() -> str:
        try:
            with deadlines.within(5.0):
                await never
        except TimeoutError:
            return "timed out"
        await asyncio.sleep(0)  # the task was not left cancelled: it can still wait
        return "went on"

    task = asyncio.ensure_future(wait())
    await asyncio.sleep(0)
    clock.now += 4.9
    assert deadlines.sweep() == 0 and not task.done()
    clock.now += 0.1
    assert deadlines.sweep() == 1
    assert await task == "timed out"
    assert never.cancelled() and len(deadlines) == 0


async def test_an_answer_in_time_leaves_nothing_behind() -> None:
    clock = Clock()
    deadlines = Deadlines(clock, autosweep=False)
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(fut.set_result, 7)
    with deadlines.within(5.0):
        assert await fut == 7
    clock.now += 60
    assert len(deadlines) == 0 and deadlines.sweep() == 0


async def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    deadlines = Deadlines(Clock(), autosweep=False)

    async def wait() -> None:
        with deadlines.within(5.0):
            await asyncio.sleep(3600)

    task = asyncio.ensure_future(wait())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(deadlines) == 0


async def test_each_wait_has_its_own_deadline() -> None:
    clock = Clock()
    deadlines = Deadlines(clock, autosweep=False)
    results: dict[str, str] = {}

    async def wait(name: str, budget: float) -> None:
        try:
            with deadlines.within(budget):
                await asyncio.sleep(3600)
        except TimeoutError:
            results[name] = "timed out"

    tasks = [asyncio.ensure_future(wait("short", 1.0)), asyncio.ensure_future(wait("long", 10.0))]
    await asyncio.sleep(0)
    clock.now += 1.0
    deadlines.sweep()
    await asyncio.sleep(0)
    assert results == {"short": "timed out"} and len(deadlines) == 1
    tasks[1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_sweep_timer_runs_on_the_loop_without_a_hand_on_the_clock() -> None:
    deadlines = Deadlines()
    with pytest.raises(TimeoutError), deadlines.within(0.02):
        await asyncio.sleep(3600)
    assert len(deadlines) == 0


async def test_a_watched_future_is_cancelled_past_its_budget_and_says_so() -> None:
    clock = Clock()
    deadlines = Deadlines(clock, autosweep=False)
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    deadline = deadlines.watch(fut, clock.now + 5.0)
    clock.now += 4.9
    assert deadlines.sweep() == 0 and not fut.done()
    clock.now += 0.1
    assert deadlines.sweep() == 1
    assert fut.cancelled() and deadline.expired and len(deadlines) == 0


async def test_a_watched_future_done_in_time_is_forgotten() -> None:
    clock = Clock()
    deadlines = Deadlines(clock, autosweep=False)
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    deadline = deadlines.watch(fut, clock.now + 5.0)
    fut.set_result(7)
    await asyncio.sleep(0)  # (done callbacks run soon, not at once)
    clock.now += 60
    assert deadlines.sweep() == 0 and len(deadlines) == 0 and not deadline.expired
