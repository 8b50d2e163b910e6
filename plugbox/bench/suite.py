"""The benchmark suite: a real host (SQLite + loopback engine, on a temporary data dir), real
confined workers spawned through the host's own zygote, the host loop the caller runs it on (the
CLI runs uvloop, as `plugbox serve` does), and the anchors measured in the same invocation.

What the suite keeps out of the measured path: plugin setup, manifest writing, session activation
(a durable registry write), the anchors (run before any worker exists) and all bookkeeping; timed
regions hold only the awaited operation and a clock read on each side. What it keeps in, on
purpose: everything `plugbox serve` would do for the same operation (permission and scope checks,
durable status writes on enable, the GC).

Everything spawned is stopped on the way out, including on cancellation (Ctrl-C under
`uvloop.run` cancels the main task, so the `finally` blocks run), and the report says whether any
worker or the zygote was still alive afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgspec

from plugbox import __version__
from plugbox.bench import anchors
from plugbox.bench._budget import derived_cpu_total
from plugbox.bench._options import BenchError, BenchOptions
from plugbox.bench._phases import Phases, Progress
from plugbox.bench._proc import machine_facts, median_fields
from plugbox.errors import ConfigError
from plugbox.settings import Settings, load_settings

__all__ = ["BenchError", "BenchOptions", "run_bench"]


def _quiet(_msg: str) -> None:
    pass


async def run_bench(options: BenchOptions, progress: Progress = _quiet) -> dict[str, Any]:
    """Run every phase (or the chosen scenario) and return the report (plain JSON data)."""
    if options.scenario != "full":
        return await _run_scenario(options, progress)
    facts = machine_facts()  # before pinning, so `cpus_usable` describes the machine, not the pin
    with contextlib.suppress(ConfigError):  # (a bad config is reported by _run)
        # Likewise the workers' CPU total a host derives here from the CPUs it may use: once this
        # process and the zygote are pinned, the zygote would derive it from the pin.
        facts["workers_cpu_total_derived"] = derived_cpu_total(load_settings())
    saved = _pin(options.cpus[0] if options.cpus else None)
    try:
        return await _run(options, progress, facts, lambda: _unpin(saved))
    finally:
        _unpin(saved)


async def _run_scenario(options: BenchOptions, progress: Progress) -> dict[str, Any]:
    """chaos, soak, neighbours or cluster (plugbox/bench/<scenario>.py): no anchors, no pinning."""
    facts = machine_facts()
    try:
        if options.scenario == "chaos":
            from plugbox.bench.chaos import run_chaos

            report = await run_chaos(plugins=options.plugins, duration_s=options.duration_s, progress=progress)
        elif options.scenario == "cluster":
            from plugbox.bench.cluster import run_cluster

            report = await run_cluster(duration_s=options.duration_s, progress=progress)
        elif options.scenario == "neighbours":
            from plugbox.bench.neighbours import run_neighbours

            report = await run_neighbours(duration_s=options.duration_s, quick=options.quick, progress=progress,
                                          only=options.attacks)
        else:
            from plugbox.bench.soak import run_soak

            report = await run_soak(plugins=options.plugins, duration_s=options.duration_s, progress=progress)
    except (ConfigError, RuntimeError) as exc:
        raise BenchError(str(exc)) from None
    facts["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return {**report, "plugbox": __version__, "quick": options.quick, "machine": facts}


class _Anchors:
    """The two anchors: standalone runs (start-up, memory) and, for the latency rounds, kept
    running in `serve` mode to answer bursts (see Phases._round)."""

    def __init__(self, options: BenchOptions, side_b: int | None) -> None:
        self.options = options
        self.side_b = side_b
        self._sessions: dict[str, anchors.AnchorSession] = {}

    async def full(self) -> dict[str, Any]:
        o = self.options
        try:
            py = await anchors.python_limit(o.anchor_rtt, o.anchor_pipelined, o.in_flight, self.side_b)
            node = await anchors.node_worker_threads(o.anchor_rtt, o.anchor_pipelined, o.idle_workers, o.node_starts,
                                                     skip=o.skip_node, side_b_cpu=self.side_b)
        except anchors.AnchorError as exc:
            raise BenchError(str(exc)) from None
        return {"python_socketpair": py, "node_worker_threads": node}

    async def open(self) -> dict[str, anchors.AnchorSession]:
        argvs = {"python_socketpair": anchors.python_argv("serve")}
        node = None if self.options.skip_node else anchors.node_argv("serve")
        if node is not None:
            argvs["node_worker_threads"] = node
        try:
            for name, argv in argvs.items():
                self._sessions[name] = await anchors.AnchorSession.start(argv, name, self.side_b)
        except anchors.AnchorError as exc:
            await self.close()
            raise BenchError(str(exc)) from None
        return dict(self._sessions)

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()


def _pin(cpu: int | None) -> dict[int, set[int]]:
    """Pin every thread of this process to `cpu`; threads and processes started later (the db writer,
    the zygote and so every worker, the anchors) inherit it. Returns the masks to restore."""
    if cpu is None:
        return {}
    saved: dict[int, set[int]] = {}
    for tid in (int(t) for t in os.listdir("/proc/self/task")):
        try:
            saved[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, {cpu})
        except (ProcessLookupError, PermissionError):
            pass
    return saved


def _unpin(saved: dict[int, set[int]]) -> None:
    for tid, mask in saved.items():
        with contextlib.suppress(OSError):  # the thread may have ended
            os.sched_setaffinity(tid, mask)


async def _run(options: BenchOptions, progress: Progress, facts: dict[str, Any],
               unpin: Callable[[], None]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "bench": "plugbox",
        "plugbox": __version__,
        "quick": options.quick,
        "options": asdict(options),
        "machine": facts,
    }
    loop = asyncio.get_running_loop()
    report["machine"]["host_loop"] = f"{type(loop).__module__}.{type(loop).__qualname__}"
    report["machine"]["cpu_placement"] = {"mode": options.placement, "side_a_cpu": options.cpus[0] if options.cpus
                                          else None, "side_b_cpu": options.cpus[1] if options.cpus else None}

    side_b = options.cpus[1] if options.placement == "split" else None

    bench_anchors = _Anchors(options, side_b)

    with tempfile.TemporaryDirectory(prefix="plugbox-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # plugin dirs must be reachable by the uid a root-started worker drops to
        try:
            base = load_settings()  # the environment and config file, as `plugbox serve` would read them
        except ConfigError as exc:
            raise BenchError(f"settings: {exc}") from None
        settings = msgspec.structs.replace(base, data_dir=str(root / "data"), plugins_dir=str(root / "plugins"))
        if settings.workers_cpu_total_percent is None and facts.get("workers_cpu_total_derived") is not None:
            # What an unpinned host derives on this machine (run_bench), not what the pinned zygote would.
            settings = msgspec.structs.replace(settings, workers_cpu_total_percent=facts["workers_cpu_total_derived"])
        report["confinement"] = {"policy": settings.confinement}
        report["settings"] = {k: getattr(settings, k) for k in (
            "hook_budget_ms", "lifecycle_budget_ms", "capability_timeout_ms", "max_calls_in_flight",
            "worker_memory_bytes", "use_netns", "worker_cgroups", "worker_cgroup_memory_bytes",
            "worker_cpu_quota_percent", "worker_pids_max", "workers_memory_total_bytes",
            "workers_cpu_total_percent", "workers_pids_total")}  # asked; the kernel's: confinement.cgroups
        suite = Phases(settings, root / "plugins", options, progress, bench_anchors, unpin)
        try:
            report["metrics"] = await suite.run(report["confinement"])
        finally:
            progress("stopping the host and every worker")
            await suite.close()
            report["cleanup"] = await suite.leftovers()
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    rounds = report["metrics"]["rounds"]
    standalone = report["metrics"]["anchors_standalone"]
    # Latency and throughput from the interleaved rounds (median over rounds); start-up and memory,
    # which only a standalone run measures, from that run.
    py, node = ({**standalone[name], **median_fields([r["anchors"][name] for r in rounds])}
                for name in ("python_socketpair", "node_worker_threads"))
    report["anchors"] = {"python_socketpair": py, "node_worker_threads": node}
    report["ratios"] = _ratios(report["metrics"], py, node)
    report["acceptance"] = _acceptance(report["metrics"], report["ratios"])
    report["notes"] = _notes(options, settings)
    busiest = max(report["machine"]["loadavg_start"][0], report["machine"]["loadavg_end"][0])
    if busiest > 0.5 * (os.cpu_count() or 1):
        report["notes"].append(f"the machine was busy (1-min loadavg up to {busiest:g} on {os.cpu_count()} CPUs): "
                               "other processes competed for the CPUs; re-run before reading small differences")
    return report


def _ratio(a: Any, b: Any, digits: int = 2) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return None
    return round(a / b, digits)


def _ratios(m: dict[str, Any], py: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """plugbox / anchor. For latencies, start-up and memory above 1 means plugbox costs more; for
    throughput (pipelined) below 1 means plugbox does less. Latency and throughput ratios are the
    median over rounds of each round's ratio (anchors and plugbox measured back to back)."""

    def per_round(key: str, field: str, anchor: str, anchor_field: str, digits: int = 2) -> float | None:
        values = [_ratio(r[key][field], r["anchors"][anchor].get(anchor_field), digits) for r in m["rounds"]]
        known = sorted(v for v in values if v is not None)
        return known[len(known) // 2] if known else None

    node_name, py_name = "node_worker_threads", "python_socketpair"
    return {
        "vs_node": {
            "cap_rtt_p50/node_rtt_p50": per_round("cap_rtt", "p50_us", node_name, "rtt_p50_us"),
            "cap_rtt_p99/node_rtt_p99": per_round("cap_rtt", "p99_us", node_name, "rtt_p99_us"),
            "hook_p50/node_rtt_p50": per_round("hook_dispatch", "p50_us", node_name, "rtt_p50_us"),
            "hook_p99/node_rtt_p99": per_round("hook_dispatch", "p99_us", node_name, "rtt_p99_us"),
            "pipelined/node_pipelined": per_round("hook_pipelined", "per_s", node_name, "pipelined_per_s", 3),
            "cold_start/node_startup": _ratio(m["cold_start"]["median_ms"], node.get("startup_ms")),
            "pss/node_rss_per_worker": _ratio(m["memory"]["pss_mb"], node.get("rss_per_worker_mb")),
        },
        "vs_python_limit": {
            "cap_rtt_p50/py_rtt_p50": per_round("cap_rtt", "p50_us", py_name, "rtt_p50_us"),
            "cap_rtt_p99/py_rtt_p99": per_round("cap_rtt", "p99_us", py_name, "rtt_p99_us"),
            "hook_p50/py_rtt_p50": per_round("hook_dispatch", "p50_us", py_name, "rtt_p50_us"),
            "hook_p99/py_rtt_p99": per_round("hook_dispatch", "p99_us", py_name, "rtt_p99_us"),
            "pipelined/py_pipelined": per_round("hook_pipelined", "per_s", py_name, "pipelined_per_s", 3),
        },
    }


def _acceptance(m: dict[str, Any], ratios: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's targets, each with what this run measured (they are written for N = 1,000)."""
    s = m["scale"]
    n = s["plugins"]
    pss = ratios["vs_node"]["pss/node_rss_per_worker"]
    rows = [
        (f"{n}/{n} confined workers enabled", f"{s['enabled']}/{n}", s["enabled"] == n),
        (f"{n}/{n} answer one hook within the budget", f"{s['answered_within_budget']}/{n}",
         s["answered_within_budget"] == n),
        ("0 leaked workers or fds after disable-all", f"{s['leaked_workers']} / {s['leaked_fds']}",
         s["leaked_workers"] == 0 and s["leaked_fds"] == 0),
        ("PSS per idle worker <= 0.5x Node RSS per worker", f"{pss}x" if pss is not None else "no Node anchor",
         pss is not None and pss <= 0.5),
        (f"host RSS with {n} workers <= 250 MB", f"{s['host_rss_mb']} MB", s["host_rss_mb"] <= 250),
        ("enable-all <= 15 s", f"{s['enable_all_ms'] / 1000:.2f} s", s["enable_all_ms"] <= 15000),
        ("one hook to all <= 1 s", f"{s['deliver_ms'] / 1000:.3f} s", s["deliver_ms"] <= 1000),
    ]
    return [{"target": target, "measured": measured, "met": met} for target, measured, met in rows]


def _notes(options: BenchOptions, settings: Settings) -> list[str]:
    notes = [
        "plugbox / anchor ratios: above 1 = plugbox slower or bigger, except pipelined (below 1 = fewer per s)",
        "the zygote is started once before any timing; cold start = spawn-from-zygote + confine + load + "
        "on_load + on_enable",
        "anchors ran in their own processes; latency and throughput were measured in rounds of short bursts, "
        "each anchor and plugbox in turn (the order rotating), so all saw the same machine: the figures shown "
        "are medians over rounds, latency/throughput ratios the median of per-round ratios; start-up and "
        "memory of the anchors come from one standalone run (metrics.anchors_standalone)",
        "node rss_per_worker_mb is RSS growth of one process (workers are threads); plugbox PSS/USS are per "
        "worker process",
    ]
    if settings.confinement != "strict":
        notes.append(f"confinement policy was {settings.confinement!r}, NOT the default strict: missing layers "
                     "are listed under confinement.sample_worker_layers")
    notes.append("the scale phase runs unpinned whatever the placement: the host, the zygote and every worker "
                 "may use every CPU (placement is about the latency and throughput phases)")
    if options.placement == "split":
        notes.append(f"placement split: plugbox's host, the socketpair parent and Node's main thread ran on CPU "
                     f"{options.cpus[0]}; plugbox's zygote and workers, the socketpair child and Node's worker "
                     f"thread on CPU {options.cpus[1]}: every pair pays the same cross-CPU wake-up per hop")
    elif options.placement == "same":
        notes.append(f"placement same: everything ran on CPU {options.cpus[0]}: latencies are software cost "
                     "without cross-CPU wake-ups; pipelined throughput has no host/worker parallelism")
    else:
        notes.append("placement free: on a small VM a request/reply pair is bimodal run to run (peers on one CPU: "
                     "no cross-CPU wake-up; on two: an IPI per hop), anchors included: ratios are not stable")
    if options.quick:
        notes.append("--quick: small N for a smoke run; do not read these numbers as measurements")
    return notes
