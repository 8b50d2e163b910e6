"""`plugbox bench --scenario soak --duration SECONDS`: steady load, watching the host for leaks.

N confined plugins (default 10), two lanes each, dispatching the chaos scenario's write hook
without faults (keys rotate over a fixed set per plugin, so the database stops growing). Every few
seconds the host's RSS, its open fd count, its asyncio task count and the dispatch count are
sampled. Drift is the last sample against the first one after the warm-up, in percent: a leak
shows as steady growth over a long run, where a healthy host levels off.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from plugbox.bench._proc import host_memory_kb
from plugbox.bench.chaos import Load, start_host, wait_gone, worker_pid, zygote_children
from plugbox.settings import Settings, load_settings

__all__ = ["run_soak"]

KEY_SPACE = 500

Progress = Callable[[str], None]


def soak_settings(root: Path) -> Settings:
    return msgspec.structs.replace(load_settings(), data_dir=str(root / "data"), plugins_dir=str(root / "plugins"))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _drift(first: float, last: float) -> float | None:
    return round((last - first) / first * 100, 2) if first else None


async def run_soak(
    *, duration_s: float = 600.0, plugins: int = 10, lanes_per_plugin: int = 2, sample_every_s: float | None = None,
    warmup_s: float | None = None, progress: Progress = lambda _m: None,
    settings: Callable[[Path], Settings] = soak_settings,
) -> dict[str, Any]:
    """Run the soak on a temporary data dir and return the report (plain JSON data)."""
    every = sample_every_s if sample_every_s is not None else max(1.0, min(5.0, duration_s / 20))
    warmup = warmup_s if warmup_s is not None else max(every, min(60.0, duration_s * 0.15))
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="plugbox-soak-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # plugin dirs must be reachable by the uid a root-started worker drops to
        s = settings(root)
        host, ids = await start_host(s, root / "plugins", plugins, progress)
        zygote = host.zygote.pid
        pids_start = {p for p in (worker_pid(host, i) for i in ids) if p is not None}
        load = Load(host, ids, lanes_per_plugin, key_space=KEY_SPACE,
                    slow_after_s=s.hook_budget_ms / 1000 + s.liveness_window_ms / 1000 + 1)
        try:
            lanes = load.run()
            progress(f"soak: {len(lanes)} lanes for {duration_s:g} s, sampling every {every:g} s "
                     f"(warm-up {warmup:g} s)")
            t0 = time.monotonic()
            while True:
                mem = host_memory_kb()
                elapsed = time.monotonic() - t0
                samples.append({"t_s": round(elapsed, 1), "rss_kb": mem["VmRSS"], "fds": _open_fds(),
                                "tasks": len(asyncio.all_tasks()), "dispatches": load.dispatches})
                if elapsed >= duration_s:
                    break
                await asyncio.sleep(min(every, max(0.0, duration_s - elapsed)))
            load.stop.set()
            await asyncio.wait(lanes, timeout=load.slow_after_s + 5)
            for task in lanes:
                task.cancel()
            pids_end = {p for p in (worker_pid(host, i) for i in ids) if p is not None} | zygote_children(zygote)
            lost = load.lost(host.storage)
        finally:
            progress("stopping the host and every worker")
            await host.stop()
        strays, zygote_left = await wait_gone(pids_start | pids_end, zygote)
    steady = [x for x in samples if x["t_s"] >= warmup] or samples[-1:]
    first, last = steady[0], samples[-1]
    span = max(1e-9, last["t_s"] - first["t_s"])
    return {
        "bench": "plugbox",
        "scenario": "soak",
        "options": {"plugins": plugins, "duration_s": duration_s, "lanes": plugins * lanes_per_plugin,
                    "sample_every_s": every, "warmup_s": warmup, "key_space_per_plugin": KEY_SPACE},
        "dispatches": {"total": load.dispatches, "per_s": round(load.dispatches / max(1e-9, samples[-1]["t_s"]), 1),
                       "per_s_after_warmup": round((last["dispatches"] - first["dispatches"]) / span, 1),
                       "failed": dict(load.failed), "failed_uncleanly": dict(load.unclean),
                       "lost_acknowledged_writes": len(lost)},
        "drift_pct": {"rss": _drift(first["rss_kb"], last["rss_kb"]), "fds": _drift(first["fds"], last["fds"]),
                      "tasks": _drift(first["tasks"], last["tasks"])},
        "first_after_warmup": first,
        "last": last,
        "max_after_warmup": {k: max(x[k] for x in steady) for k in ("rss_kb", "fds", "tasks")},
        "workers_restarted": len(pids_end - pids_start),
        "processes": {"stray_workers": strays, "zygote_left_running": zygote_left},
        "samples": samples,
    }
