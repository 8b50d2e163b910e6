"""A capability call's loop time, measured step by step (`plugbox.capabilities.metered`): what it
computes is charged, what it waits for is not, and it behaves as the bare coroutine would
(result, exception, cancellation). A fake clock moved by the coroutine itself."""

from __future__ import annotations

import asyncio

import pytest

from plugbox.capabilities.metered import metered


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_each_step_is_charged_and_the_waits_between_are_not() -> None:
    clock = Clock()
    charged: list[float] = []
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def call() -> str:
        clock.now += 0.25  # computes before waiting
        answer = await gate
        clock.now += 0.5  # and after
        return answer

    task = asyncio.ensure_future(metered(call(), charged.append, clock))
    await asyncio.sleep(0)
    clock.now += 30.0  # the time it spends waiting is the host's to give, not the plugin's cost
    gate.set_result("done")
    assert await task == "done"
    assert charged == [0.25, 0.5]


async def test_an_exception_is_raised_through_and_its_last_step_charged() -> None:
    clock = Clock()
    charged: list[float] = []

    async def call() -> None:
        await asyncio.sleep(0)
        clock.now += 2.0
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await metered(call(), charged.append, clock)
    assert sum(charged) == 2.0


async def test_cancelling_the_task_cancels_the_call_inside() -> None:
    charged: list[float] = []
    cleaned: list[str] = []

    async def call() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("call")

    task = asyncio.ensure_future(metered(call(), charged.append, Clock()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["call"] and len(charged) == 2
