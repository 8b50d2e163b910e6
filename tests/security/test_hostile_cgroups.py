"""Hostile plugins against the worker's cgroup: CPU past the quota is throttled (and the watchdog,
which judges the throttled share, lets it live), threads past pids.max do not start, and memory past
the group's limit brings the kernel's OOM killer down on the worker — never on the host.

Each test reads the verdict from the kernel: the group's own CPU accounting, pids.events, and the
OOM kill the zygote found in the group when it reaped the worker.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import pytest

from plugbox.confine import _cgroupfs
from plugbox.lifecycle import Status

from .conftest import SESSION, Attack, alive, reported, wait_for

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(60)]


def group_dirs(pid: int) -> tuple[str, ...]:
    """The worker's own cgroup directories (v1: one per hierarchy)."""
    dirs = tuple(d for d in _cgroupfs.groups_of(pid) if "/plugbox-" in d)
    assert dirs, f"worker {pid} is in no plugbox group"
    return dirs


def throttling(dirs: tuple[str, ...]) -> tuple[int, int]:
    """(periods, throttled periods) from the group's cpu.stat (v1 and v2 name them alike)."""
    for group in dirs:
        stat = Path(group, "cpu.stat")
        if stat.exists():
            fields = dict(line.split() for line in stat.read_text().splitlines())
            if "nr_periods" in fields:
                return int(fields["nr_periods"]), int(fields["nr_throttled"])
    raise AssertionError(f"no cpu.stat with nr_periods in {dirs}")


def pids_refused(pid: int) -> int:
    """How many new tasks the group's pids.max refused (pids.events "max")."""
    events = next(Path(d, "pids.events") for d in group_dirs(pid) if Path(d, "pids.events").exists())
    return int(events.read_text().split("max ")[1].split()[0])


SPIN_FOUR_THREADS = """
    import hashlib, threading
    def spin():
        block = b"x" * (1 << 20)
        while True:
            hashlib.sha256(block).digest()  # releases the GIL: four threads can use four CPUs
    def attack(ctx, cfg):
        for _ in range(4):
            threading.Thread(target=spin, daemon=True).start()
        return "spinning"
"""


# 20 %: on the v1 hierarchy the worker's group competes with the machine's other tasks as one
# entity, so a busy 2-CPU machine could hold it under a larger quota and the measure would be the
# machine's, not the quota's. Throttled periods show it was the quota that held it.
@pytest.mark.parametrize("settings_overrides", [{"worker_cpu_quota_percent": 20, "worker_cpu_window_ms": 1000}])
async def test_four_spinning_threads_are_held_to_the_cpu_quota_and_not_killed(attack: Attack) -> None:
    run = await attack.run(SPIN_FOUR_THREADS)
    assert run.result["value"] == "spinning"
    dirs = group_dirs(run.pid)
    await asyncio.sleep(0.5)  # let the threads reach their steady state
    periods_before = throttling(dirs)
    used_before, wall_before = _cgroupfs.cpu_usage_ns(dirs), time.monotonic()
    await asyncio.sleep(3.0)  # three watchdog windows
    used_after, wall_after = _cgroupfs.cpu_usage_ns(dirs), time.monotonic()
    periods, throttled = (after - before for after, before in zip(throttling(dirs), periods_before, strict=True))
    assert used_before is not None and used_after is not None
    share = (used_after - used_before) / 1e9 / (wall_after - wall_before)
    print(f"cpu quota 20 %: measured {share:.1%} of a CPU over {wall_after - wall_before:.1f} s; "
          f"throttled in {throttled} of {periods} periods")
    assert 0.18 <= share <= 0.22, f"the worker used {share:.1%} of a CPU under a 20 % quota"
    assert throttled >= periods // 2 > 0  # the quota, not a busy machine, is what held it
    assert alive(run.pid) and run.entry.status == Status.ENABLED  # under the watchdog's 90 %: not killed
    outcome = await attack.host.dispatch("message:ack", {"id": "m1"}, SESSION)
    assert not outcome.errors and not outcome.timed_out
    await attack.host.manager.disable(run.entry.plugin_id)
    await attack.aftermath()


@pytest.mark.parametrize("settings_overrides", [{"worker_pids_max": 12}])
async def test_thread_bomb_stops_at_pids_max(attack: Attack) -> None:
    run = await attack.run("""
        import threading
        HELD = threading.Event()
        def attack(ctx, cfg):
            started = 0
            try:
                for _ in range(1000):
                    threading.Thread(target=HELD.wait, daemon=True).start()
                    started += 1
            except RuntimeError as exc:
                return {"started": started, "error": str(exc)}
            return {"started": started, "error": None}
    """)
    value = run.result["value"]
    assert value["error"] and value["started"] < 12, value
    assert pids_refused(run.pid) > 0, "pids.max never refused a task: something else stopped the threads"
    assert alive(run.pid) and run.entry.status == Status.ENABLED
    await attack.aftermath()


@pytest.mark.parametrize("settings_overrides", [{"worker_cgroup_memory_bytes": 64 << 20,
                                                 "worker_memory_bytes": 512 << 20}])
async def test_memory_past_the_group_limit_oom_kills_the_worker_not_the_host(
    attack: Attack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    run, outcome = await attack.run_in_hook("""
        def attack(ctx, cfg):
            hoard = []
            while True:
                hoard.append(bytearray(8 << 20))  # the address space allows 512 MiB, the group 64
    """)
    assert run.entry_storage("started") == (True, True)  # the attack ran
    assert run.entry_storage("result") == (False, None)  # ...and never finished: no MemoryError
    await wait_for(lambda: not alive(run.pid), within=5)
    await wait_for(lambda: any(f"worker {run.pid}: the kernel's OOM killer" in r.getMessage()
                               for r in caplog.records), within=5)
    assert reported(outcome) == {"id": "m1"}  # a dead worker's hook resolves to continue
    await wait_for(lambda: any("killed by SIGKILL" in r.getMessage() for r in caplog.records), within=5)
    # Charged to the plugin as what it was: an OOM kill at its own group's limit.
    await wait_for(lambda: run.entry.last_error is not None, within=5)
    failure = run.entry.failures[0]
    assert failure.kind == "worker_oom", failure
    assert "OOM killer, its own memory limit (worker_cgroup_memory_bytes) reached" in failure.message, failure
    await attack.aftermath()
