"""Fair slots (`plugbox.totals.slots`): a plugin's own bound, the host-wide bound shared fairly, the
ceiling, who a freed slot goes to, and refusal at once for callers that ask for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from plugbox.errors import CapabilityError
from plugbox.totals.slots import FairSlots


class Calls:
    """Calls holding slots until released; each call's task finishes when it is let go."""

    def __init__(self, slots: FairSlots) -> None:
        self.slots = slots
        self.running: list[tuple[str, int]] = []
        self._gates: dict[tuple[str, int], asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._n = 0

    def start(self, plugin: str) -> tuple[str, int]:
        self._n += 1
        key = (plugin, self._n)
        gate = self._gates[key] = asyncio.Event()

        async def call() -> None:
            async with self.slots.hold(plugin):
                self.running.append(key)
                await gate.wait()
                self.running.remove(key)

        self._tasks.append(asyncio.create_task(call()))
        return key

    def start_many(self, plugin: str, n: int) -> list[tuple[str, int]]:
        return [self.start(plugin) for _ in range(n)]

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async def finish(self, key: tuple[str, int]) -> None:
        self._gates[key].set()
        await self.settle()

    def running_of(self, plugin: str) -> int:
        return sum(1 for p, _ in self.running if p == plugin)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def calls() -> AsyncIterator[Calls]:
    c = Calls(FairSlots(8, 4, ceiling=12))
    yield c
    await c.close()


async def test_a_plugin_past_its_own_bound_waits_behind_its_own_calls(calls: Calls) -> None:
    keys = calls.start_many("a", 6)
    await calls.settle()
    assert calls.running_of("a") == 4 and calls.slots.waited["a"] == 2
    assert calls.slots.in_flight_of("a") == 6
    await calls.finish(keys[0])
    assert calls.running_of("a") == 4 and calls.slots.queued == 1  # its own freed slot let one in


async def test_past_the_total_a_plugin_under_its_fair_share_still_goes_at_once(calls: Calls) -> None:
    calls.start_many("a", 4)
    calls.start_many("b", 4)  # the total (8) is held by two plugins
    calls.start_many("a", 2)  # at its own bound: waits
    await calls.settle()
    assert calls.slots.in_flight == 8
    calls.start_many("victim", 2)  # share 8 // 3 = 2: both go at once past the total
    await calls.settle()
    assert calls.running_of("victim") == 2 and "victim" not in calls.slots.waited
    calls.start("victim")  # at its share of a full host: waits
    await calls.settle()
    assert calls.running_of("victim") == 2 and calls.slots.waited["victim"] == 1


async def test_a_plugin_at_its_fair_share_of_a_full_host_waits(calls: Calls) -> None:
    calls.start_many("a", 3)
    calls.start_many("b", 3)
    calls.start_many("c", 2)  # 8 held: shares 8 // 3 = 2
    await calls.settle()
    calls.start("c")
    calls.start("a")
    await calls.settle()
    assert (calls.running_of("a"), calls.running_of("c")) == (3, 2)
    assert calls.slots.waited == {"a": 1, "c": 1}


async def test_the_ceiling_is_never_passed(calls: Calls) -> None:
    for p in "abcdefghijklmnop":
        calls.start(p)
    await calls.settle()
    assert calls.slots.in_flight == calls.slots.peak_in_flight == 12
    assert calls.slots.queued == 4


async def test_a_freed_slot_goes_to_the_plugin_holding_the_fewest() -> None:
    calls = Calls(FairSlots(4, 4))  # a hard bound: the ceiling is the total
    try:
        first = calls.start_many("hog", 4)
        calls.start_many("hog", 3)
        await calls.settle()
        calls.start("late")  # arrives after the hog's queue
        await calls.settle()
        await calls.finish(first[0])
        assert calls.running_of("late") == 1 and calls.running_of("hog") == 3
    finally:
        await calls.close()


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    slots = FairSlots(1, 1)
    async with slots.hold("a"):
        waiter = asyncio.create_task(slots.hold("b").__aenter__())
        await asyncio.sleep(0)
        assert slots.queued == 1
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        assert slots.queued == 0 and slots.in_flight_of("b") == 0
    assert slots.in_flight == 0
    async with slots.hold("b"):
        assert slots.held_by("b") == 1


async def test_refuse_past_own_refuses_at_once_counting_waiting_calls() -> None:
    slots = FairSlots(1, 2, refuse_past_own=True, refusal=lambda pid, n: f"{pid} has {n}, at most 2")
    async with slots.hold("a"):
        waiting = asyncio.create_task(slots.hold("a").__aenter__())
        await asyncio.sleep(0)
        with pytest.raises(CapabilityError, match="a has 2, at most 2"):
            await slots.hold("a").__aenter__()
        assert slots.refused == {"a": 1}
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
