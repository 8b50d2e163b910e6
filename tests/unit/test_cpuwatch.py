"""The CPU watchdog judges a process's sustained CPU share per window (all threads together)."""

from __future__ import annotations

import asyncio
import os
import subprocess

from plugbox.bridge.cpuwatch import CpuWatch, cpu_seconds


def test_cpu_seconds_reads_this_process_and_none_for_a_gone_one() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))  # burn a little CPU
    after = cpu_seconds(os.getpid())
    assert before is not None and after is not None and after > before
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert cpu_seconds(gone.pid) is None


class FakeProcess:
    """A process whose CPU time and clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.cpu: float | None = 0.0

    def clock(self) -> float:
        return self.now

    def cpu_seconds(self, _pid: int) -> float | None:
        return self.cpu

    def run(self, seconds: float, share: float) -> None:
        self.now += seconds
        assert self.cpu is not None
        self.cpu += seconds * share


def _watch(proc: FakeProcess, reports: list[str], limit: float = 0.5, window: float = 10.0) -> CpuWatch:
    watch = CpuWatch(4242, limit, window, reports.append, clock=proc.clock, cpu=proc.cpu_seconds)
    watch.start()
    return watch


async def test_a_window_over_the_limit_is_reported_once_and_the_watch_ends() -> None:
    proc, reports = FakeProcess(), []
    watch = _watch(proc, reports)
    proc.run(10.0, share=1.5)  # two threads, 75 % each
    watch.check()
    assert reports == ["runaway: used 150% of a CPU over 10 s (the limit is 50%)"]
    proc.run(10.0, share=1.5)
    watch.check()
    assert len(reports) == 1  # ended: a runaway is reported once


async def test_a_burst_inside_a_window_and_an_idle_process_are_left_alone() -> None:
    proc, reports = FakeProcess(), []
    watch = _watch(proc, reports)
    proc.run(1.0, share=1.0)  # a handler computing for a second ...
    proc.run(9.0, share=0.0)  # ... inside a quiet window: 10 % overall
    watch.check()
    proc.run(10.0, share=0.0)
    watch.check()
    proc.run(10.0, share=0.49)
    watch.check()
    assert reports == []
    watch.stop()


async def test_each_window_is_judged_on_its_own() -> None:
    proc, reports = FakeProcess(), []
    watch = _watch(proc, reports)
    proc.run(10.0, share=0.1)
    watch.check()
    proc.run(10.0, share=0.9)  # the quiet window before does not dilute this one
    watch.check()
    assert len(reports) == 1 and "used 90%" in reports[0]


async def test_a_gone_process_ends_the_watch_quietly_and_stop_is_final() -> None:
    proc, reports = FakeProcess(), []
    watch = _watch(proc, reports)
    proc.cpu = None
    watch.check()
    assert reports == []
    other = FakeProcess()
    stopped = _watch(other, reports)
    stopped.stop()
    other.run(10.0, share=2.0)
    stopped.check()
    assert reports == []


async def test_the_watch_arms_its_own_timer_on_the_loop() -> None:
    """Without a hand on the clock, the loop's timer runs each check after one window."""
    reports: list[str] = []
    ticks = iter([0.0, 5.0])
    watch = CpuWatch(4242, 0.5, 0.01, reports.append, cpu=lambda _pid: next(ticks))
    watch.start()
    await asyncio.sleep(0.05)
    assert len(reports) == 1 and reports[0].startswith("runaway: used")
