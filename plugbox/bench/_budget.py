"""The cgroup budget a bench run ran under, read back from the kernel: the limits of one worker's
group and of the group all workers share (`plugbox-<zygote pid>`, the workers_*_total settings).

A run's figures (memory per worker, how many plugins start, CPU left to the host's loop) depend on
these, and the defaults of the totals are derived from the machine, so the report records what the
kernel held rather than what was asked. Read from a sample worker, once, while it runs.
"""

from __future__ import annotations

import os
from typing import Any

from plugbox.confine import _cgroupfs
from plugbox.confine.cgroups import Request, totals_for
from plugbox.settings import Settings

__all__ = ["derived_cpu_total", "describe_budget", "read_budget"]


def derived_cpu_total(settings: Settings) -> int | None:
    """The workers' CPU total a host with these settings derives on this machine, worked out in this
    (unpinned) process; None where no cgroup tree can be used (the zygote then derives nothing)."""
    tree = _cgroupfs.find_tree(settings.cgroup_parent)
    if isinstance(tree, str):
        return None
    asked = Request(mode="auto", parent=settings.cgroup_parent, total_memory_bytes=0, total_pids=0)
    return totals_for(tree, asked).cpu_quota_percent


def _numbers(totals: _cgroupfs.Totals) -> dict[str, int]:
    return {"cpu_quota_percent": totals.cpu_quota_percent, "memory_bytes": totals.memory_bytes,
            "pids_max": totals.pids_max}


def read_budget(worker_pid: int) -> dict[str, Any] | None:
    """{"owner": "plugbox-<pid>", "per_worker": {...}, "all_workers": {...}} (0: no limit), or None
    when the worker is in no plugbox group (worker_cgroups off or unavailable) or is gone."""
    try:
        dirs = tuple(d for d in _cgroupfs.groups_of(worker_pid)
                     if os.path.basename(os.path.dirname(d)).startswith("plugbox-"))
    except OSError:
        return None
    if not dirs:
        return None
    owners = tuple(os.path.dirname(d) for d in dirs)
    return {"owner": os.path.basename(owners[0]), "per_worker": _numbers(_cgroupfs.held(dirs)),
            "all_workers": _numbers(_cgroupfs.held(owners))}


def _limits(numbers: dict[str, int]) -> str:
    cpu, memory, pids = numbers["cpu_quota_percent"], numbers["memory_bytes"], numbers["pids_max"]
    return ", ".join((f"cpu {cpu} %" if cpu else "cpu unlimited",
                      f"memory {memory >> 20} MiB" if memory else "memory unlimited",
                      f"pids {pids}" if pids else "pids unlimited"))


def describe_budget(confinement: dict[str, Any]) -> str:
    """One line for the terminal and HTML reports from the report's `confinement`; "" for a report
    from before the budget was recorded."""
    if "cgroups" not in confinement:
        return ""
    budget = confinement["cgroups"]
    if not budget:
        return "cgroups: none (workers ran in no plugbox group)"
    return (f"cgroups, read back: each worker {_limits(budget['per_worker'])}; "
            f"all workers together ({budget['owner']}) {_limits(budget['all_workers'])}")
