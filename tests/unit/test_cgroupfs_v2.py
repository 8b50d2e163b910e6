"""The cgroup v2 side of confine/_cgroupfs.py against a fake cgroupfs: a directory tree whose
`mkdir` creates the interface files the kernel would. (This machine's cgroups are v1, which the
security suite exercises for real; v2 is what a systemd host with Delegate= hands over.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plugbox.confine import _cgroupfs

V2_FILES = ("cgroup.procs", "cgroup.kill", "cgroup.subtree_control", "cpu.max", "memory.max",
            "memory.swap.max", "memory.oom.group", "pids.max")


@pytest.fixture
def fake_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    real_mkdir = os.mkdir

    def kernel_mkdir(path: str | os.PathLike[str], mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(path, mode)
        if str(path).startswith(str(tmp_path)):
            for name in V2_FILES:
                Path(path, name).write_text("")
            Path(path, "cgroup.controllers").write_text("cpu memory pids\n")

    service = tmp_path / "system.slice" / "plugbox.service"
    kernel_mkdir(tmp_path / "system.slice")
    kernel_mkdir(service)
    (service / "cgroup.procs").write_text("4242\n4243\n")  # the host and its zygote
    monkeypatch.setattr(_cgroupfs.os, "mkdir", kernel_mkdir)
    return service


def test_a_delegated_group_with_processes_moves_them_to_a_leaf_before_enabling_controllers(fake_v2: Path) -> None:
    tree = _cgroupfs.Tree(2, (str(fake_v2),))
    [owner] = _cgroupfs.owner_dirs(tree, 4243)
    assert (fake_v2 / "supervisor" / "cgroup.procs").read_text() == "4243"  # each pid written in turn
    assert (fake_v2 / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert owner == str(fake_v2 / "plugbox-4243")
    assert Path(owner, "cgroup.subtree_control").read_text() == "+cpu +memory +pids"


def test_a_worker_group_gets_quota_memory_without_swap_oom_group_and_pids(fake_v2: Path) -> None:
    tree = _cgroupfs.Tree(2, (str(fake_v2),))
    owners = _cgroupfs.owner_dirs(tree, 4243)
    [group] = _cgroupfs.create(tree, owners, "w1-echo", _cgroupfs.Limits(40, 96 << 20, 12))
    files = {name: Path(group, name).read_text() for name in V2_FILES}
    assert files["cpu.max"] == "40000 100000"
    assert files["memory.max"] == str(96 << 20)
    assert files["memory.swap.max"] == "0"
    assert files["memory.oom.group"] == "1"
    assert files["pids.max"] == "12"
    assert _cgroupfs.read_limits((group,))["cpu"] == "cpu.max=40000 100000"


def test_no_quota_is_max_and_a_path_like_name_is_refused(fake_v2: Path) -> None:
    tree = _cgroupfs.Tree(2, (str(fake_v2),))
    owners = _cgroupfs.owner_dirs(tree, 1)
    [group] = _cgroupfs.create(tree, owners, "w2", _cgroupfs.Limits(0, 1 << 30, 64))
    assert Path(group, "cpu.max").read_text() == "max 100000"
    with pytest.raises(ValueError, match="plain directory name"):
        _cgroupfs.create(tree, owners, "../escape", _cgroupfs.Limits(0, 1 << 30, 64))
