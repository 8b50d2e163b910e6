"""The fetch body budget: bytes reserved whole, within the host's pool and each plugin's share."""

from __future__ import annotations

import asyncio

import pytest

from plugbox.net.budget import BodyBudget, BytePool

MiB = 1 << 20


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_reservation_that_does_not_fit_waits_until_bytes_are_released() -> None:
    pool = BytePool(10 * MiB)
    assert await pool.reserve(8 * MiB) == 8 * MiB
    waiter = asyncio.ensure_future(pool.reserve(4 * MiB))
    await _settle()
    assert not waiter.done() and pool.reserved == 8 * MiB
    pool.release(8 * MiB)
    assert await waiter == 4 * MiB and pool.reserved == 4 * MiB


async def test_a_small_reservation_does_not_queue_behind_a_large_one_that_does_not_fit() -> None:
    pool = BytePool(10 * MiB)
    await pool.reserve(8 * MiB)
    large = asyncio.ensure_future(pool.reserve(10 * MiB))
    await _settle()
    assert await asyncio.wait_for(pool.reserve(2), 1) == 2
    assert not large.done()
    pool.release(8 * MiB)
    pool.release(2)
    assert await large == 10 * MiB


async def test_a_reservation_past_the_capacity_is_clamped_to_it() -> None:
    pool = BytePool(4 * MiB)
    assert await pool.reserve(10 * MiB) == 4 * MiB


async def test_a_cancelled_waiter_holds_nothing_and_lets_others_in() -> None:
    pool = BytePool(10 * MiB)
    await pool.reserve(6 * MiB)
    waiter = asyncio.ensure_future(pool.reserve(8 * MiB))
    await _settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.reserved == 6 * MiB and pool.idle is False
    pool.release(6 * MiB)
    assert pool.idle


async def test_a_plugin_past_its_share_waits_behind_its_own_fetches_only() -> None:
    budget = BodyBudget(host_bytes=32 * MiB, plugin_bytes=10 * MiB)
    release = asyncio.Event()
    second_started = asyncio.Event()

    async def hog(started: asyncio.Event | None = None) -> None:
        async with budget.hold("hog", 10 * MiB):
            if started is not None:
                started.set()
            await release.wait()

    first = asyncio.ensure_future(hog())
    await _settle()
    second = asyncio.ensure_future(hog(second_started))
    await _settle()
    assert budget.reserved_by("hog") == 10 * MiB and not second_started.is_set()
    async with asyncio.timeout(1), budget.hold("neighbour", 10 * MiB):  # the neighbour goes at once
        assert budget.reserved == 20 * MiB
    release.set()
    await asyncio.gather(first, second)
    assert second_started.is_set()
    assert budget.reserved == 0 and budget.reserved_by("hog") == 0
