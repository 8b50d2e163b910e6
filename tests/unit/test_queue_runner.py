"""The runner shared by the delivery queues (`plugbox.queue.QueueRunner`): it survives a queue it
cannot read, and keeps the claims of its attempts in flight alive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection

from plugbox.errors import DatabaseError
from plugbox.lifecycle.clock import SystemClock
from plugbox.queue import QueueRunner


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_queue_it_cannot_read_is_tried_again_and_the_runner_carries_on() -> None:
    calls = 0
    attempted = asyncio.Event()

    async def due(_now: float, _limit: int, _busy: Collection[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise DatabaseError("postgres: the server closed the connection")
        return ["d1"] if calls == 2 else []

    async def attempt(_item: str) -> None:
        attempted.set()

    runner: QueueRunner[str] = QueueRunner(due=due, next_due=lambda _busy: None, attempt=attempt, key=str,
                                           max_in_flight=2, clock=SystemClock(), name="test", retry_s=0.01)
    task = asyncio.create_task(runner.run())
    async with asyncio.timeout(5):
        await attempted.wait()
    assert not task.done()  # the failed read did not end the runner
    await _stop(task)


async def test_the_claims_of_attempts_in_flight_are_renewed_until_they_end() -> None:
    renewed: list[frozenset[str]] = []
    renewed_thrice, finish, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()
    handed = False

    async def due(_now: float, _limit: int, _busy: Collection[str]) -> list[str]:
        nonlocal handed
        if handed:
            return []
        handed = True
        return ["d1"]

    async def attempt(_item: str) -> None:
        await finish.wait()
        ended.set()

    async def renew(keys: Collection[str]) -> None:
        renewed.append(frozenset(keys))
        if len(renewed) >= 3:  # renewed again and again while the attempt runs
            renewed_thrice.set()

    runner: QueueRunner[str] = QueueRunner(due=due, next_due=lambda _busy: None, attempt=attempt, key=str,
                                           max_in_flight=2, clock=SystemClock(), name="test",
                                           renew=renew, renew_every_s=0.01)
    task = asyncio.create_task(runner.run())
    async with asyncio.timeout(5):
        await renewed_thrice.wait()
    finish.set()
    async with asyncio.timeout(5):
        await ended.wait()
    await asyncio.sleep(0.02)  # the runner's bookkeeping after the attempt (a loop turn or two)
    assert not runner.in_flight
    count = len(renewed)
    await asyncio.sleep(0.05)  # five renewal periods with nothing in flight
    await _stop(task)
    assert set(renewed) == {frozenset({"d1"})}
    assert len(renewed) == count  # nothing in flight: nothing renewed
