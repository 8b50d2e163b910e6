"""Totals for all workers together (confine/_cgroupfs.py `Totals`, confine/cgroups.py `totals_for`)
against fake cgroupfs trees, v2 and v1: directory trees whose `mkdir` creates the interface files
the kernel would. What the kernel then does with them (OOM-kill the largest worker, throttle) is
the security suite's to show on this machine's real v1 hierarchies."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from plugbox.confine import _cgroupfs, cgroups
from plugbox.errors import ConfigError
from plugbox.settings import load_settings

V2_FILES = {"cgroup.procs": "", "cgroup.kill": "", "cgroup.subtree_control": "", "cpu.max": "max 100000",
            "memory.max": "max", "memory.swap.max": "max", "memory.oom.group": "0", "pids.max": "max"}
V1_FILES = {
    "cpu": {"cgroup.procs": "", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1"},
    "memory": {"cgroup.procs": "", "memory.limit_in_bytes": "9223372036854771712",
               "memory.memsw.limit_in_bytes": "9223372036854771712", "memory.use_hierarchy": "0"},
    "pids": {"cgroup.procs": "", "pids.max": "max"},
}
MiB = 1 << 20


def _fill(path: Path, files: dict[str, str]) -> None:
    for name, value in files.items():
        (path / name).write_text(value)


def _kernel_write(path: str, value: str) -> None:
    """An interface file holds the last value written (a plain file would keep a longer old tail)."""
    Path(path).write_text(value)


@pytest.fixture
def fake_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    real_mkdir = os.mkdir

    def kernel_mkdir(path: str | os.PathLike[str], mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(path, mode)
        _fill(Path(path), {**V2_FILES, "cgroup.controllers": "cpu memory pids\n"})

    service = tmp_path / "system.slice" / "plugbox.service"
    kernel_mkdir(tmp_path / "system.slice")
    kernel_mkdir(service)
    monkeypatch.setattr(os, "mkdir", kernel_mkdir)  # the os _cgroupfs uses
    monkeypatch.setattr(_cgroupfs, "_write", _kernel_write)
    return service


@pytest.fixture
def fake_v1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _cgroupfs.Tree:
    """One hierarchy per controller; like the v1 kernel, a cfs quota above the parent's is EINVAL."""
    real_mkdir = os.mkdir

    def kernel_mkdir(path: str | os.PathLike[str], mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(path, mode)
        _fill(Path(path), V1_FILES[Path(path).relative_to(tmp_path).parts[0]])

    def kernel_write(path: str, value: str) -> None:
        if path.endswith("cpu.cfs_quota_us"):
            parent = int(Path(path).parent.parent.joinpath("cpu.cfs_quota_us").read_text())
            if 0 <= parent < int(value) or (int(value) >= 0 and any(
                    int(child.read_text()) > int(value) for child in Path(path).parent.glob("*/cpu.cfs_quota_us"))):
                raise OSError(errno.EINVAL, "Invalid argument")
        _kernel_write(path, value)

    bases = []
    for controller in V1_FILES:
        kernel_mkdir(tmp_path / controller)
        kernel_mkdir(tmp_path / controller / "host")
        bases.append(str(tmp_path / controller / "host"))
    monkeypatch.setattr(os, "mkdir", kernel_mkdir)  # the os _cgroupfs uses
    monkeypatch.setattr(_cgroupfs, "_write", kernel_write)
    return _cgroupfs.Tree(1, tuple(bases))


def test_v2_owner_group_holds_the_totals_without_oom_group(fake_v2: Path) -> None:
    tree = _cgroupfs.Tree(2, (str(fake_v2),))
    [owner] = _cgroupfs.owner_dirs(tree, 4243, _cgroupfs.Totals(150, 200 * MiB, 500))
    files = {name: Path(owner, name).read_text() for name in V2_FILES}
    assert files["cpu.max"] == "150000 100000"
    assert files["memory.max"] == str(200 * MiB)
    assert files["memory.swap.max"] == "0"
    assert files["pids.max"] == "500"
    # 1 here would make an OOM past the total end every worker at once, not the largest one
    assert files["memory.oom.group"] == "0"
    [group] = _cgroupfs.create(tree, (owner,), "w1-big", _cgroupfs.Limits(100, 288 * MiB, 64))
    assert Path(group, "memory.oom.group").read_text() == "1"  # the victim's own group goes whole
    assert _cgroupfs.read_limits((owner,)) == {"cpu": "cpu.max=150000 100000",
                                              "memory": f"memory.max={200 * MiB}", "pids": "pids.max=500"}


def test_v2_no_total_leaves_the_owner_group_unlimited(fake_v2: Path) -> None:
    tree = _cgroupfs.Tree(2, (str(fake_v2),))
    [owner] = _cgroupfs.owner_dirs(tree, 4243, _cgroupfs.Totals(0, 0, 0))
    assert [Path(owner, n).read_text() for n in ("cpu.max", "memory.max", "pids.max")] == ["max 100000", "max", "max"]


def test_v1_owner_groups_hold_the_totals_in_each_hierarchy(fake_v1: _cgroupfs.Tree) -> None:
    cpu, memory, pids = _cgroupfs.owner_dirs(fake_v1, 4243, _cgroupfs.Totals(50, 200 * MiB, 500))
    assert Path(cpu, "cpu.cfs_quota_us").read_text() == "50000"
    assert Path(cpu, "cpu.cfs_period_us").read_text() == "100000"
    assert Path(memory, "memory.limit_in_bytes").read_text() == str(200 * MiB)
    assert Path(memory, "memory.memsw.limit_in_bytes").read_text() == str(200 * MiB)  # no swap past it
    assert Path(memory, "memory.use_hierarchy").read_text() == "1"  # a flat group would bound nothing
    assert Path(pids, "pids.max").read_text() == "500"


def test_v1_worker_quota_above_the_total_is_clamped_to_it(fake_v1: _cgroupfs.Tree) -> None:
    totals = _cgroupfs.Totals(50, 200 * MiB, 500)
    owners = _cgroupfs.owner_dirs(fake_v1, 4243, totals)
    asked = _cgroupfs.Limits(100, 288 * MiB, 64)
    with pytest.raises(OSError, match="Invalid argument"):  # what v1 says to the quota as asked
        _cgroupfs.create(fake_v1, owners, "w0-raw", asked)
    cpu, memory, _ = _cgroupfs.create(fake_v1, owners, "w1-big", _cgroupfs.within(asked, totals))
    assert Path(cpu, "cpu.cfs_quota_us").read_text() == "50000"
    assert Path(memory, "memory.limit_in_bytes").read_text() == str(288 * MiB)  # the total binds first
    assert _cgroupfs.within(_cgroupfs.Limits(0, 1, 1), totals) == _cgroupfs.Limits(0, 1, 1)  # -1 inherits


def test_groups_place_a_worker_under_totals_it_can_join(fake_v1: _cgroupfs.Tree,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cgroupfs, "find_tree", lambda parent: fake_v1)
    groups = cgroups.Groups()
    request = cgroups.Request(mode="required", cpu_quota_percent=100, memory_bytes=288 * MiB, pids_max=64,
                              total_cpu_percent=50, total_memory_bytes=0, total_pids=300)
    placement = groups.place("w1-echo", request)
    assert placement.dirs, placement.note
    cpu, memory, pids = (os.path.dirname(d) for d in placement.dirs)
    assert Path(cpu, "cpu.cfs_quota_us").read_text() == "50000"
    assert Path(memory, "memory.limit_in_bytes").read_text() == "9223372036854771712"  # 0: no total
    assert Path(pids, "pids.max").read_text() == "300"


def test_capacity_is_the_least_of_the_machine_and_the_groups_above(fake_v2: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cgroupfs, "_machine", lambda: _cgroupfs.Totals(400, 16 << 30, 100_000))
    (fake_v2.parent / "memory.max").write_text(str(4 << 30))  # the slice: MemoryMax=4G
    (fake_v2 / "cpu.max").write_text("200000 100000")  # the service: CPUQuota=200%
    tree = _cgroupfs.Tree(2, (str(fake_v2),))
    assert _cgroupfs.capacity(tree) == _cgroupfs.Totals(200, 4 << 30, 100_000)


def test_unset_totals_leave_the_host_a_reserve_of_what_it_could_get(fake_v2: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _cgroupfs.Tree(2, (str(fake_v2),))
    monkeypatch.setattr(_cgroupfs, "_machine", lambda: _cgroupfs.Totals(200, 24 << 30, 32768))
    assert cgroups.totals_for(tree, cgroups.Request()) == _cgroupfs.Totals(150, 21 << 30, 28672)
    monkeypatch.setattr(_cgroupfs, "_machine", lambda: _cgroupfs.Totals(100, 2 << 30, 1000))
    assert cgroups.totals_for(tree, cgroups.Request()) == _cgroupfs.Totals(50, 1 << 30, 744)
    asked = cgroups.Request(total_cpu_percent=0, total_memory_bytes=300 * MiB, total_pids=None)
    assert cgroups.totals_for(tree, asked) == _cgroupfs.Totals(0, 300 * MiB, 744)


@pytest.mark.parametrize(("overrides", "named"), [
    ({"workers_memory_total_bytes": 100 * MiB}, "workers_memory_total_bytes .* at least worker_cgroup_memory_bytes"),
    ({"workers_pids_total": 10}, "workers_pids_total .* at least worker_pids_max"),
])
def test_a_total_below_one_workers_limit_is_refused_naming_both(overrides: dict[str, int], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(None, {}, **overrides)


def test_zero_means_no_total_and_is_accepted() -> None:
    settings = load_settings(environ={"PLUGBOX_WORKERS_MEMORY_TOTAL_BYTES": "0"}, workers_pids_total=0)
    assert settings.workers_memory_total_bytes == settings.workers_pids_total == 0
    assert settings.workers_cpu_total_percent is None


def test_held_reads_a_group_and_its_owners_limits_back_as_numbers(fake_v1: _cgroupfs.Tree) -> None:
    """What `plugbox bench` records as the budget it ran under (bench/_budget.py)."""
    totals = _cgroupfs.Totals(150, 200 * MiB, 500)
    owners = _cgroupfs.owner_dirs(fake_v1, 4243, totals)
    groups = _cgroupfs.create(fake_v1, owners, "w1-big", _cgroupfs.Limits(100, 128 * MiB, 64))
    assert _cgroupfs.held(owners) == totals
    assert _cgroupfs.held(groups) == _cgroupfs.Totals(100, 128 * MiB, 64)


def test_held_on_v2_reads_no_total_as_0(fake_v2: Path) -> None:
    v2 = _cgroupfs.Tree(2, (str(fake_v2),))
    [owner] = _cgroupfs.owner_dirs(v2, 4243, _cgroupfs.Totals(0, 200 * MiB, 0))  # 0: no total
    assert _cgroupfs.held((owner,)) == _cgroupfs.Totals(0, 200 * MiB, 0)
