"""Liveness after a hook timeout: a worker whose loop does not answer, or answers while its
event-loop thread stayed runnable the whole window, is ended; an idle loop stays."""

from __future__ import annotations

import asyncio

from plugbox.bridge.liveness import Liveness
from plugbox.errors import WorkerGone


class World:
    """A fake clock and scheduler account; `sleep` advances the clock instead of waiting."""

    def __init__(self, busy_share: float, pong: bool = True) -> None:
        self.now = 0.0
        self.busy_share = busy_share
        self.pong = pong
        self.deaths: list[str] = []
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def runnable(self) -> float:
        return self.now * self.busy_share

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    async def ping(self) -> None:
        if not self.pong:
            await asyncio.Event().wait()  # never answered

    def liveness(self) -> Liveness:
        return Liveness(self.ping, self.runnable, 5.0, self.deaths.append, clock=self.clock, sleep=self.sleep)


async def _run(live: Liveness) -> None:
    live.check()
    for _ in range(100):
        if not live.checking:
            return
        await asyncio.sleep(0)
    raise AssertionError("the check did not finish")


async def test_an_idle_loop_that_answers_stays() -> None:
    world = World(busy_share=0.0)
    await _run(world.liveness())
    assert world.deaths == [] and world.now == 5.0  # it watched the whole window


async def test_a_loop_runnable_the_whole_window_is_a_runaway_even_if_something_answers() -> None:
    world = World(busy_share=1.0)  # a plugin thread forged the pong while the loop spun
    await _run(world.liveness())
    assert len(world.deaths) == 1 and world.deaths[0].startswith("runaway: its event loop stayed runnable (100%)")


async def test_no_pong_within_the_window_is_unresponsive() -> None:
    world = World(busy_share=0.0, pong=False)
    await _run(world.liveness())
    assert world.deaths == ["unresponsive: no answer to the liveness ping within 5 s"]


async def test_a_worker_gone_meanwhile_is_no_verdict_and_stop_cancels_the_check() -> None:
    world = World(busy_share=1.0)

    async def gone() -> None:
        raise WorkerGone("exited")

    live = Liveness(gone, world.runnable, 5.0, world.deaths.append, clock=world.clock, sleep=world.sleep)
    await _run(live)
    assert world.deaths == []
    stuck = World(busy_share=0.0, pong=False)

    async def forever(_seconds: float) -> None:
        await asyncio.Event().wait()

    live = Liveness(stuck.ping, stuck.runnable, 5.0, stuck.deaths.append, clock=stuck.clock, sleep=forever)
    live.check()
    await asyncio.sleep(0)
    assert live.checking
    live.stop()
    await asyncio.sleep(0)
    assert not live.checking and stuck.deaths == []
