"""The measured phases of `plugbox bench`, against one real host and its confined workers.

Timed regions hold only the awaited operation and a clock read on each side; setup (writing
plugins, loading them, activating sessions: durable registry writes) is never timed. See
suite.py for the order and plugbox/bench/__init__.py for what each metric means.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from plugbox.bench._budget import read_budget
from plugbox.bench._options import BenchError, BenchOptions
from plugbox.bench._plugins import (
    ACK,
    CAP_EVENT,
    COUNTER,
    DISPATCH_EVENT,
    KEY,
    PROBE,
    VALUE,
    carried,
    carrying,
    install,
)
from plugbox.bench._proc import alive, median_fields, percentile, smaps_rollup_kb, summarize_ns
from plugbox.bench.scale import run_scale
from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.lifecycle import PluginView, Status
from plugbox.settings import Settings

__all__ = ["Phases", "Progress"]

SESSION = "bench"
BURST_WARM = 20  # round trips run and dropped at the start of every burst, by every system alike
IDLE_SETTLE_S = 1.0  # idle workers sit this long before their memory is read (node anchor: the same)
CLEANUP_WAIT_S = 5.0

Progress = Callable[[str], None]


class Burster(Protocol):
    """An anchor kept running between bursts (anchors.AnchorSession)."""

    async def rtt(self, n: int) -> list[int]: ...

    async def pipelined(self, n: int) -> float: ...


class Anchors(Protocol):
    async def full(self) -> dict[str, Any]:
        """Each anchor's standalone report (start-up, memory, its own latency and throughput)."""
        ...

    async def open(self) -> Mapping[str, Burster]:
        """The anchors that can run bursts, by report name, started and warm."""
        ...

    async def close(self) -> None: ...


class Phases:
    """Every measured phase, against one host; `close` and `leftovers` are the way out."""

    def __init__(
        self,
        settings: Settings,
        plugins_dir: Path,
        options: BenchOptions,
        progress: Progress,
        anchors: Anchors,
        unpin: Callable[[], None] = lambda: None,
    ) -> None:
        self.anchors = anchors
        self.unpin = unpin  # gives this process back every CPU it had before the suite pinned it
        self.options = options
        self.progress = progress
        self.plugins_dir = plugins_dir
        self.engine = LoopbackEngine()
        self.host = Host(settings, engine=self.engine, bundled=False)
        self.worker_pids: set[int] = set()
        self.zygote_pid: int | None = None

    async def run(self, confinement: dict[str, Any]) -> dict[str, Any]:
        host = self.host
        await host.start(restore=False)
        await self.engine.create_session(SESSION)
        await host.zygote.ensure_started()  # once, before any timing
        self.zygote_pid = host.zygote.pid
        if self.options.placement == "split" and self.zygote_pid is not None:
            os.sched_setaffinity(self.zygote_pid, {self.options.cpus[1]})  # every worker forks from it
        metrics: dict[str, Any] = {}

        probe = await self._enable_one("bench-probe", PROBE, ["storage:use", "hooks:modify"])
        confinement["sample_worker_layers"] = (
            None if probe.confinement is None else [dict(layer) for layer in probe.confinement])
        confinement["layers_not_applied"] = [
            str(layer.get("name")) for layer in probe.confinement or [] if not layer.get("applied")
        ]
        confinement["cgroups"] = None if probe.worker_pid is None else read_budget(probe.worker_pid)
        await host.storage.set(probe.plugin_id, KEY, VALUE)
        self.progress("anchors, standalone (start-up, memory)")
        metrics["anchors_standalone"] = standalone = await self.anchors.full()
        # The VM's cross-CPU wake-up cost shifts every few seconds, by up to 2x. So latency and
        # throughput are measured in short bursts, anchors and plugbox in turn, many times per
        # round: every system is exposed to the same shifts, and each round's ratios compare
        # figures taken within the same second or so.
        rounds: list[dict[str, Any]] = []
        n = self.options.rounds
        sessions = await self.anchors.open()
        try:
            for r in range(1, n + 1):
                self.progress(f"round {r}/{n}: anchors and plugbox in alternating bursts")
                rounds.append(await self._round(sessions, standalone))
        finally:
            await self.anchors.close()
        metrics["rounds"] = rounds
        for key in ("cap_rtt", "hook_dispatch", "hook_pipelined"):
            metrics[key] = median_fields([r[key] for r in rounds])
        await host.disable(probe.plugin_id)

        self.progress(f"cold start x{self.options.cold_starts}")
        metrics["cold_start"] = await self._cold_start()
        self.progress(f"memory of {self.options.idle_workers} idle workers")
        metrics["memory"] = await self._idle_memory()
        self.progress(f"scale: {self.options.plugins} plugins enabled at once")
        metrics["scale"] = await self._scale()
        return metrics

    # -- setup helpers (never timed) --
    async def _load(self, plugin_id: str, source: str, permissions: list[str]) -> PluginView:
        self.host.load_plugin(install(self.plugins_dir, plugin_id, source, permissions))
        return await self.host.set_active_sessions(plugin_id, [SESSION])

    def _check_enabled(self, loaded: PluginView) -> PluginView:
        """The plugin as it is now; BenchError unless it runs in a worker."""
        entry = self.host.plugin(loaded.plugin_id)
        if entry.status != Status.ENABLED or entry.worker_pid is None:
            hint = ""
            if "ConfinementError" in str(entry.error) or "confinement layer" in str(entry.error):
                hint = (" (strict policy: every layer must apply; PLUGBOX_CONFINEMENT=degraded measures with "
                        "what is available, and the report says so)")
            raise BenchError(f"plugin {entry.plugin_id} did not enable: {entry.error}{hint}")
        self._track(entry)
        return entry

    def _track(self, view: PluginView) -> None:
        if view.worker_pid is not None:
            self.worker_pids.add(view.worker_pid)

    async def _enable_one(self, plugin_id: str, source: str, permissions: list[str]) -> PluginView:
        entry = await self._load(plugin_id, source, permissions)
        with contextlib.suppress(Exception):  # reported from the plugin's status
            await self.host.enable(plugin_id)
        return self._check_enabled(entry)

    @staticmethod
    def _check_outcome(outcome: Any, what: str) -> None:
        if outcome.errors or outcome.timed_out:
            raise BenchError(f"{what}: hook failed: errors={outcome.errors[:3]} timed_out={outcome.timed_out[:3]}")

    async def _round(self, sessions: Mapping[str, Burster], standalone: dict[str, Any]) -> dict[str, Any]:
        """One round: `bursts` turns of a burst of round trips from every system (the order
        rotating each turn), then one pipelined run of each."""
        o = self.options
        per_burst = max(1, o.cap_calls // o.rounds // o.bursts)
        hook_per_burst = max(1, o.hook_calls // o.rounds // o.bursts)
        await self._cap_batch(o.warmup)
        await self._hook_latencies(o.warmup)
        lat: dict[str, list[int]] = {name: [] for name in (*sessions, "cap", "hook")}

        async def cap() -> None:
            lat["cap"] += (await self._cap_batch(per_burst + BURST_WARM))[BURST_WARM:]

        async def hook() -> None:
            lat["hook"] += (await self._hook_latencies(hook_per_burst + BURST_WARM))[BURST_WARM:]

        def anchor(name: str, session: Burster) -> Callable[[], Awaitable[None]]:
            async def burst() -> None:
                lat[name] += (await session.rtt(per_burst + BURST_WARM))[BURST_WARM:]
            return burst

        turns = [anchor(name, s) for name, s in sessions.items()] + [cap, hook]
        for b in range(o.bursts):
            for turn in turns[b % len(turns):] + turns[: b % len(turns)]:
                await turn()
        pipelined_n = max(o.in_flight, o.pipelined_total // o.rounds)
        anchors: dict[str, Any] = {}
        for name, report in standalone.items():
            if name in sessions:
                ns = summarize_ns(lat[name])
                anchors[name] = {"anchor": report.get("anchor"), "rtt_p50_us": ns["p50_us"],
                                 "rtt_p99_us": ns["p99_us"], "samples": ns["n"],
                                 "pipelined_per_s": round(await sessions[name].pipelined(pipelined_n))}
            else:
                anchors[name] = report  # skipped: says why
        return {
            "anchors": anchors,
            "cap_rtt": {**summarize_ns(lat["cap"]), "verb": "storage.get", "bursts": o.bursts,
                        "timed_in": "plugin (perf_counter_ns around each await ctx.storage.get)"},
            "hook_dispatch": {**summarize_ns(lat["hook"]), "bursts": o.bursts,
                              "timed_in": "host (await host.bus.execute, one confined sync handler)"},
            "hook_pipelined": await self._pipelined(pipelined_n),
        }

    # -- 1. capability round trip --
    async def _cap_batch(self, n: int) -> list[int]:
        outcome = await self.host.bus.execute(CAP_EVENT, carrying({"n": n}, SESSION), SESSION)
        self._check_outcome(outcome, "capability round trip")
        answer = carried(outcome.data)
        lat = answer.get("lat") if isinstance(answer, dict) else None
        if not isinstance(lat, list) or len(lat) != n:
            raise BenchError("capability round trip: the probe returned no latency list")
        return lat

    # -- 2. hook dispatch --
    async def _hook_latencies(self, n: int) -> list[int]:
        execute = self.host.bus.execute
        clock = time.perf_counter_ns
        data = ACK
        lat = [0] * n
        failed = 0
        for i in range(n):
            t0 = clock()
            outcome = await execute(DISPATCH_EVENT, data, SESSION)
            lat[i] = clock() - t0
            if outcome.errors or outcome.timed_out:
                failed += 1
        if failed:
            raise BenchError(f"hook dispatch: {failed} of {n} dispatches failed")
        return lat

    # -- 3. pipelined hook dispatch --
    async def _pipelined(self, dispatches: int) -> dict[str, Any]:
        execute = self.host.bus.execute
        data = ACK
        failed = 0

        async def lane(count: int) -> None:
            nonlocal failed
            for _ in range(count):
                outcome = await execute(DISPATCH_EVENT, data, SESSION)
                if outcome.errors or outcome.timed_out:
                    failed += 1

        async def run(total: int) -> float:
            lanes = self.options.in_flight
            per_lane = max(1, total // lanes)
            t0 = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                for _ in range(lanes):
                    tg.create_task(lane(per_lane))
            return per_lane * lanes / (time.perf_counter() - t0)

        await run(min(dispatches, 2000))  # warm-up
        per_s = await run(dispatches)
        if failed:
            raise BenchError(f"pipelined hook dispatch: {failed} dispatches failed")
        total = max(1, dispatches // self.options.in_flight) * self.options.in_flight
        return {"per_s": round(per_s), "in_flight": self.options.in_flight, "total": total}

    # -- 4. cold start --
    async def _cold_start(self) -> dict[str, Any]:
        entry = await self._load("bench-cold", COUNTER, ["hooks:modify"])
        host = self.host
        times: list[float] = []
        for _ in range(self.options.cold_starts):
            t0 = time.perf_counter_ns()
            with contextlib.suppress(Exception):  # reported from the entry's status
                await host.enable(entry.plugin_id)
            dt = time.perf_counter_ns() - t0
            self._check_enabled(entry)
            times.append(dt / 1e6)
            await host.disable(entry.plugin_id)
        times.sort()
        return {
            "median_ms": round(percentile(times, 0.5), 1),
            "min_ms": round(times[0], 1),
            "max_ms": round(times[-1], 1),
            "n": len(times),
            "zygote_prestarted": True,
            "measures": "await host.enable() until status `enabled`: spawn via the zygote, fork, confine, "
                        "hello, load, on_load, on_enable, durable status write",
        }

    # -- 5. memory per idle worker --
    async def _idle_memory(self) -> dict[str, Any]:
        entries = [await self._enable_one(f"bench-idle-{i:03d}", COUNTER, ["hooks:modify"])
                   for i in range(self.options.idle_workers)]
        await asyncio.sleep(IDLE_SETTLE_S)
        rows = [smaps_rollup_kb(_pid(e)) for e in entries]
        zygote = smaps_rollup_kb(self.zygote_pid) if self.zygote_pid else {}
        await asyncio.gather(*(self.host.disable(e.plugin_id) for e in entries))

        def mb(field: str, how: Callable[[list[float]], float]) -> float:
            return round(how([r.get(field, 0) / 1024 for r in rows]), 2)

        def med(v: list[float]) -> float:
            return percentile(sorted(v), 0.5)

        def mean(v: list[float]) -> float:
            return sum(v) / len(v)

        return {
            "workers": len(rows),
            "pss_mb": mb("Pss", med),
            "uss_mb": mb("USS", med),
            "rss_mb": mb("Rss", med),
            "pss_mb_mean": mb("Pss", mean),
            "uss_mb_mean": mb("USS", mean),
            "pss_anon_mb": mb("Pss_Anon", med),
            "zygote_pss_mb": round(zygote.get("Pss", 0) / 1024, 2),
            "zygote_rss_mb": round(zygote.get("Rss", 0) / 1024, 2),
            "zygote_shared_mb": round((zygote.get("Shared_Clean", 0) + zygote.get("Shared_Dirty", 0)) / 1024, 2),
            "measures": f"/proc/<pid>/smaps_rollup of each idle worker ({IDLE_SETTLE_S:g} s after enable, "
                        f"{len(rows)} workers alive, medians); USS = Private_Clean + Private_Dirty",
        }

    # -- 6. scale --
    async def _scale(self) -> dict[str, Any]:
        # Capacity, not a latency ratio: the host, the zygote and so every worker forked from now on
        # may use every CPU, as they would in `plugbox serve`.
        self.unpin()
        if self.zygote_pid is not None:
            os.sched_setaffinity(self.zygote_pid, os.sched_getaffinity(0))

        async def load(plugin_id: str) -> PluginView:
            return await self._load(plugin_id, COUNTER, ["hooks:modify"])

        return await run_scale(self.host, load, self.options.plugins, SESSION, self.zygote_pid, self._track)

    # -- teardown --
    async def close(self) -> None:
        try:
            await self.host.stop()
        finally:
            await self.host.db.close()  # idempotent; a host that never started is not closed by stop()

    async def leftovers(self) -> dict[str, Any]:
        deadline = time.monotonic() + CLEANUP_WAIT_S
        while True:
            workers = sorted(p for p in self.worker_pids if alive(p))
            zygote = self.zygote_pid is not None and alive(self.zygote_pid)
            if (not workers and not zygote) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        return {"workers_seen": len(self.worker_pids), "workers_left_running": workers,
                "zygote_left_running": zygote}


def _pid(view: PluginView) -> int:
    if view.worker_pid is None:
        raise BenchError(f"plugin {view.plugin_id} has no worker process")
    return view.worker_pid
