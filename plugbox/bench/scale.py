"""The scale phase of `plugbox bench`: N confined plugins alive at once on one host.

What it measures, in order: enable all N at once (asyncio.gather, as a bulk enable or a boot would;
the host's start slots pace them) and when each one came up; one hook delivered to all of them
(one chain: every plugin holds `hooks:modify` and adds one to a count, so the count at the end says
how many answered within their budget); the same hook sent to each plugin alone, one after the
other, for the distribution per plugin; memory of the workers (PSS and USS of a sample, PSS of all)
and of the zygote they were forked from; the host's RSS and fds; then disable all, and whether any
worker or host fd outlived it.

Nothing here changes what is measured for speed: the plugins are ordinary untrusted plugins under
the default confinement, loaded and activated before any clock starts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

from plugbox.bench._plugins import COUNT_EVENT, counting
from plugbox.bench._proc import alive, host_memory_kb, percentile, smaps_rollup_kb
from plugbox.fdlimit import open_fds
from plugbox.host import Host
from plugbox.lifecycle import PluginView, Status

__all__ = ["MEMORY_SAMPLE", "run_scale"]

MEMORY_SAMPLE = 50  # workers whose PSS/USS are read one by one (all are summed for the total)
EXIT_WAIT_S = 10.0  # after disable-all, how long the workers get to be gone before they count as leaked
FD_SLACK = 2  # fds the host may hold after disable-all beyond what it held before (a lazily opened file)


def _mb(kb: float) -> float:
    return round(kb / 1024, 2)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def _enable_all(host: Host, ids: list[str]) -> tuple[float, list[float], collections.Counter[str]]:
    """Enable every plugin at once. Returns the wall time, when each success came (seconds from the
    start, sorted) and the failure reasons."""
    t0 = time.perf_counter()
    came_up: list[float] = []
    failures: collections.Counter[str] = collections.Counter()

    async def one(plugin_id: str) -> None:
        try:
            await host.enable(plugin_id)
        except Exception as exc:  # counted and reported: the scale test says how many failed and why
            failures[re.sub(r"^plugin '[^']*' ", "", str(exc))[:300]] += 1
        else:
            came_up.append(time.perf_counter() - t0)

    await asyncio.gather(*(one(p) for p in ids))
    return time.perf_counter() - t0, sorted(came_up), failures


async def _per_plugin(host: Host, ids: list[str], session: str) -> tuple[list[float], int]:
    """The hook sent to each plugin alone, in turn: seconds per dispatch, and how many failed."""
    lat: list[float] = []
    failed = 0
    clock = time.perf_counter
    for plugin_id in ids:
        t0 = clock()
        outcome = await host.bus.execute(COUNT_EVENT, counting(0, session), session, plugin=plugin_id)
        lat.append(clock() - t0)
        if outcome.errors or outcome.timed_out or outcome.data["input"]["text"] != "1":
            failed += 1
    return lat, failed


def _memory(pids: list[int], zygote_pid: int | None) -> dict[str, Any]:
    rows: list[dict[str, int]] = []
    total_pss = 0
    step = max(1, len(pids) // MEMORY_SAMPLE)
    for i, pid in enumerate(pids):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # died since: counted as 0
            row = smaps_rollup_kb(pid)
            total_pss += row.get("Pss", 0)
            if i % step == 0:
                rows.append(row)
    zygote = smaps_rollup_kb(zygote_pid) if zygote_pid else {}

    def median(field: str) -> float:
        return _mb(percentile(sorted(r.get(field, 0) for r in rows), 0.5)) if rows else 0.0

    return {
        "sampled": len(rows),
        "pss_mb": median("Pss"),
        "uss_mb": median("USS"),
        "rss_mb": median("Rss"),
        "workers_pss_total_mb": round(total_pss / 1024, 1),
        "zygote_rss_mb": _mb(zygote.get("Rss", 0)),
        "zygote_pss_mb": _mb(zygote.get("Pss", 0)),
        "zygote_shared_mb": _mb(zygote.get("Shared_Clean", 0) + zygote.get("Shared_Dirty", 0)),
    }


async def _gone(pids: list[int], wait_s: float) -> list[int]:
    """The pids still alive after up to `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        left = [p for p in pids if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.05)


async def run_scale(
    host: Host,
    load: Callable[[str], Awaitable[PluginView]],
    n: int,
    session: str,
    zygote_pid: int | None,
    track: Callable[[PluginView], None],
) -> dict[str, Any]:
    """Load `n` counting plugins with `load(plugin_id)` (not timed), then measure (module docstring).
    `track` is told every worker seen, so the suite can check none outlives the run."""
    ids = [(await load(f"bench-scale-{i:04d}")).plugin_id for i in range(n)]
    rss_before = host_memory_kb()["VmRSS"]
    fds_before = open_fds()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    enable_s, came_up, failures = await _enable_all(host, ids)
    views = [host.plugin(p) for p in ids]
    enabled = [v for v in views if v.status == Status.ENABLED and v.worker_pid is not None]
    for view in enabled:
        track(view)
    pids = [v.worker_pid for v in enabled if v.worker_pid is not None]
    fds_with_workers = open_fds()

    t0 = time.perf_counter()
    outcome = await host.bus.execute(COUNT_EVENT, counting(0, session), session)
    deliver_s = time.perf_counter() - t0
    answered = int(outcome.data["input"]["text"])  # every answer was checked against the payload
    per_plugin, per_plugin_failed = await _per_plugin(host, [v.plugin_id for v in enabled], session)
    host_mem = host_memory_kb()
    memory = _memory(pids, zygote_pid)

    t0 = time.perf_counter()
    await asyncio.gather(*(host.disable(v.plugin_id) for v in enabled), return_exceptions=True)
    disable_s = time.perf_counter() - t0
    left_running = await _gone(pids, EXIT_WAIT_S)
    fds_after = open_fds()
    budget_ms = host.settings.hook_budget_ms
    lat = sorted(per_plugin)
    return {
        "plugins": n,
        "enabled": len(enabled),
        "enable_failures": [{"count": c, "reason": reason} for reason, c in failures.most_common(5)],
        "enable_all_ms": _ms(enable_s),
        "enable_curve_ms": _curve(came_up),
        "start_concurrency": host.settings.worker_start_concurrency,
        "answered_within_budget": answered,
        "timed_out": len(outcome.timed_out),
        "errors": len(outcome.errors),
        "budget_ms": budget_ms,
        "deliver_ms": _ms(deliver_s),
        "delivered_within_budget": deliver_s * 1000 <= budget_ms,
        "per_plugin": {
            "n": len(lat),
            "failed": per_plugin_failed,
            "p50_us": round(percentile(lat, 0.5) * 1e6, 1) if lat else None,
            "p99_us": round(percentile(lat, 0.99) * 1e6, 1) if lat else None,
            "max_us": round(lat[-1] * 1e6, 1) if lat else None,
            "histogram_us": _histogram([x * 1e6 for x in lat]),
        },
        "memory": memory,
        "host_rss_before_mb": round(rss_before / 1024, 1),
        "host_rss_mb": round(host_mem["VmRSS"] / 1024, 1),
        "host_rss_peak_mb": round(host_mem["VmHWM"] / 1024, 1),
        "fds": {"before": fds_before, "with_workers": fds_with_workers, "after_disable": fds_after,
                "per_worker": round((fds_with_workers - fds_before) / max(1, len(enabled)), 2),
                "soft_limit": soft, "hard_limit": hard},
        "disable_all_ms": _ms(disable_s),
        "leaked_workers": len(left_running),
        "leaked_fds": max(0, fds_after - fds_before - FD_SLACK),
        "measures": "enable all concurrently (asyncio.gather; the host's start slots pace them), then one "
                    "bus.execute of a hook every plugin handles, in one chain: each handler adds 1 to the "
                    "count, so the count at the end = handlers that answered within their budget; then the "
                    "same hook to each plugin alone, in turn (per_plugin); memory: median PSS/USS of a "
                    f"sample of up to {MEMORY_SAMPLE} workers, PSS of all; leaks: workers alive "
                    f"{EXIT_WAIT_S:g} s after disable-all, host fds beyond the count before enable-all",
    }


def _curve(times: list[float], points: int = 20) -> list[list[float]]:
    """[seconds, plugins up] at `points` evenly spaced counts (the scale curve of the report)."""
    if not times:
        return []
    step = max(1, len(times) // points)
    picked = [(i + 1, t) for i, t in enumerate(times) if (i + 1) % step == 0 or i + 1 == len(times)]
    return [[_ms(t), count] for count, t in picked]


def _histogram(values: list[float], bins: int = 24) -> list[list[float]]:
    """[upper edge µs, count] over log-spaced bins from the smallest to the largest value."""
    if not values:
        return []
    lo, hi = max(min(values), 1.0), max(max(values), 1.0)
    if hi <= lo:
        return [[round(hi, 1), len(values)]]
    ratio = (hi / lo) ** (1 / bins)
    edges = [lo * ratio ** (i + 1) for i in range(bins)]
    counts = [0] * bins
    for v in values:
        i = 0
        while i < bins - 1 and v > edges[i]:
            i += 1
        counts[i] += 1
    return [[round(e, 1), c] for e, c in zip(edges, counts, strict=True)]
