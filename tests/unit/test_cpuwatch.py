"""The CPU watchdog judges a process's sustained CPU share per window (all threads together)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

from plugbox.bridge.cpuwatch import CpuWatch, cpu_seconds


def test_cpu_seconds_reads_this_process_and_none_for_a_gone_one() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))  # burn a little CPU
    after = cpu_seconds(os.getpid())
    assert before is not None and after is not None and after > before
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert cpu_seconds(gone.pid) is None


async def test_a_busy_thread_over_a_window_is_reported_once_and_an_idle_process_never() -> None:
    reports: list[str] = []
    idle = await asyncio.create_subprocess_exec("sleep", "5")
    quiet: list[str] = []
    try:
        busy_watch = CpuWatch(os.getpid(), limit=0.5, window=0.3, on_runaway=reports.append)
        idle_watch = CpuWatch(idle.pid, limit=0.5, window=0.3, on_runaway=quiet.append)
        busy_watch.start()
        idle_watch.start()
        stop = time.monotonic() + 1.0

        def burn() -> None:
            while time.monotonic() < stop:
                pass

        await asyncio.to_thread(burn)  # the loop keeps running the watchdogs meanwhile
        busy_watch.stop()
        idle_watch.stop()
    finally:
        idle.kill()
        await idle.wait()
    assert len(reports) == 1 and reports[0].startswith("runaway: used") and "of a CPU" in reports[0]
    assert quiet == []
