"""Small readers the suite needs: latency summaries, per-process memory from /proc, machine facts,
and whether a process is still alive. Linux only; nothing here is on a measured path."""

from __future__ import annotations

import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "alive",
    "host_memory_kb",
    "machine_facts",
    "median_fields",
    "node_version",
    "percentile",
    "smaps_rollup_kb",
    "summarize_ns",
]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (the same rule the node anchor uses)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(len(sorted_values) * q))
    return sorted_values[rank - 1]


def summarize_ns(samples: Iterable[int]) -> dict[str, Any]:
    """p50/p90/p99/mean/min/max in microseconds of nanosecond samples."""
    s = sorted(samples)
    us = 1000.0
    return {
        "n": len(s),
        "p50_us": round(percentile(s, 0.50) / us, 1),
        "p90_us": round(percentile(s, 0.90) / us, 1),
        "p99_us": round(percentile(s, 0.99) / us, 1),
        "mean_us": round(sum(s) / len(s) / us, 1),
        "min_us": round(s[0] / us, 1),
        "max_us": round(s[-1] / us, 1),
    }


def smaps_rollup_kb(pid: int) -> dict[str, int]:
    """/proc/<pid>/smaps_rollup as {field: kB}, with USS = Private_Clean + Private_Dirty.

    Workers are not dumpable (confinement), so this needs the same uid with ptrace rights or
    CAP_SYS_PTRACE; a PermissionError says which."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    out["USS"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def host_memory_kb() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, in kB."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _mem_total_mb() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def node_version(node: str | None) -> str | None:
    if node is None:
        return None
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_facts() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    node = shutil.which("node")
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "mem_total_mb": _mem_total_mb(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "node": node_version(node),
        "uvloop": pkg("uvloop"),
        "msgspec": pkg("msgspec"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def median_fields(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Field by field: the median of numeric fields across `rows`, the first row's value otherwise."""
    out: dict[str, Any] = {}
    for key, first in rows[0].items():
        values = [r.get(key) for r in rows]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) == len(values):
            mid = statistics.median(numbers)
            out[key] = round(mid, 1) if isinstance(mid, float) else mid
        else:
            out[key] = first
    return out
