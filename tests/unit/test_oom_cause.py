"""An OOM-killed worker's failure names the OOM and whose memory limit was reached.

`_cgroupfs.oom_limit` reads the kernel's counters of the dead worker's group and of its owner
(`plugbox-<zygote pid>`, all workers together) before the group is removed; here on fake groups
holding the files as the kernel writes them (v2 memory.events / memory.events.local, v1 peak and limit).
The zygote's `Exited` carries the verdict to the host, where `Ending.describe` is what the
plugin's `lastError` quotes. The real kernel's side is tests/security/test_hostile_workers_total.py.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import msgspec
import pytest

from plugbox.bridge.process import Ending, Zygote
from plugbox.confine import _cgroupfs
from plugbox.protocol import Exited

MiB = 1 << 20
SIGKILLED = signal.SIGKILL  # a raw wait status: killed by signal 9, no core


def _events(oom: int, oom_kill: int) -> str:
    return f"low 0\nhigh 0\nmax {oom * 3}\noom {oom}\noom_kill {oom_kill}\noom_group_kill {min(oom_kill, 1)}\n"


def _v2(tmp_path: Path, *, own_oom: int, owner_oom: int, kills: int = 1) -> tuple[str, ...]:
    owner = tmp_path / "plugbox-7"
    worker = owner / "w1-big"
    worker.mkdir(parents=True)
    (worker / "memory.events").write_text(_events(own_oom, kills))
    (worker / "memory.events.local").write_text(_events(own_oom, kills))
    # The owner's memory.events counts its children's events too; .local only its own limit's.
    (owner / "memory.events").write_text(_events(own_oom + owner_oom, kills))
    (owner / "memory.events.local").write_text(_events(owner_oom, 0))
    return (str(worker),)


def _v1(tmp_path: Path, *, own_peak: int, owner_peak: int) -> tuple[str, ...]:
    """A worker group (128 MiB) under an owner (200 MiB) on v1, with the peaks the kernel recorded
    (failcnt stays 0: this machine's 6.18 kernel does not keep it, so it is not what is read)."""
    dirs = []
    for controller in ("cpu", "memory", "pids"):
        worker = tmp_path / controller / "plugbox-7" / "w1-big"
        worker.mkdir(parents=True)
        dirs.append(str(worker))
    memory = tmp_path / "memory" / "plugbox-7" / "w1-big"
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    for group, limit, peak in ((memory, 128 * MiB, own_peak), (memory.parent, 200 * MiB, owner_peak)):
        (group / "memory.failcnt").write_text("0")
        (group / "memory.limit_in_bytes").write_text(str(limit))
        (group / "memory.max_usage_in_bytes").write_text(str(peak))
    return tuple(dirs)


def test_v2_own_limit(tmp_path: Path) -> None:
    assert _cgroupfs.oom_limit(_v2(tmp_path, own_oom=1, owner_oom=0)) == "own"


def test_v2_total_is_read_from_the_owners_local_events_not_its_hierarchical_ones(tmp_path: Path) -> None:
    assert _cgroupfs.oom_limit(_v2(tmp_path, own_oom=0, owner_oom=2)) == "total"


def test_v2_a_sibling_at_its_own_limit_is_not_the_total(tmp_path: Path) -> None:
    dirs = _v2(tmp_path, own_oom=0, owner_oom=0)
    owner = Path(dirs[0]).parent
    (owner / "memory.events").write_text(_events(1, 1))  # a sibling's own OOM, counted up the tree
    assert _cgroupfs.oom_limit(dirs) == ""  # neither limit here: e.g. the machine-wide OOM killer


def test_v1_own_limit_and_total_by_peak(tmp_path: Path) -> None:
    # As read on this machine: a worker killed at its own limit peaked at exactly that limit...
    assert _cgroupfs.oom_limit(_v1(tmp_path / "own", own_peak=128 * MiB, owner_peak=140 * MiB)) == "own"
    # ...one killed at the total peaked below its own while the owner peaked at the total.
    assert _cgroupfs.oom_limit(_v1(tmp_path / "total", own_peak=97 * MiB, owner_peak=200 * MiB - 4096)) == "total"
    assert _cgroupfs.oom_limit(_v1(tmp_path / "none", own_peak=97 * MiB, owner_peak=150 * MiB)) == ""


def test_v1_no_limit_is_never_reached(tmp_path: Path) -> None:
    dirs = _v1(tmp_path, own_peak=97 * MiB, owner_peak=150 * MiB)
    owner = tmp_path / "memory" / "plugbox-7"
    (owner / "memory.limit_in_bytes").write_text("9223372036854771712")  # v1's "no limit"
    (owner / "memory.max_usage_in_bytes").write_text("9223372036854771712")
    assert _cgroupfs.oom_limit(dirs) == ""


def test_no_memory_files_tells_nothing(tmp_path: Path) -> None:
    group = tmp_path / "cpu" / "plugbox-7" / "w1"
    group.mkdir(parents=True)
    assert _cgroupfs.oom_limit((str(group),)) == ""


def test_ending_names_the_oom_and_whose_limit() -> None:
    assert Ending(SIGKILLED).describe() == "killed by SIGKILL"
    own = Ending(SIGKILLED, 1, "own").describe()
    total = Ending(SIGKILLED, 2, "total").describe()
    unknown = Ending(SIGKILLED, 1, "").describe()
    assert own.startswith("killed by SIGKILL: the kernel's OOM killer") and "its own memory limit" in own
    assert "worker_cgroup_memory_bytes" in own and "total" not in own
    assert "memory total of all workers (workers_memory_total_bytes)" in total
    assert "OOM killer, a memory limit reached" in unknown


async def test_the_zygotes_exited_message_reaches_the_workers_ending(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    zygote = Zygote()
    loop = asyncio.get_running_loop()
    waiting: asyncio.Future[Ending] = loop.create_future()
    zygote._exits[41] = waiting  # a worker the host holds
    wire = msgspec.json.encode(Exited(41, SIGKILLED, 1, "total"))  # as the zygote sends it
    zygote._handle(msgspec.json.decode(wire, type=Exited), [])
    assert waiting.result() == Ending(SIGKILLED, 1, "total")
    zygote._handle(Exited(42, SIGKILLED), [])  # exited before the host asked: kept for spawn()
    assert zygote._early_exits[42] == Ending(SIGKILLED)
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("worker 41: the kernel's OOM killer ended 1 process(es)")
    assert "workers_memory_total_bytes" in warning
