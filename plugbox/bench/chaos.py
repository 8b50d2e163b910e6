"""`plugbox bench --scenario chaos`: fault injection under sustained load.

N confined plugins (default 20), each on its own loopback session so every dispatch reaches exactly
one of them. Lanes keep dispatching a write hook to each plugin: the plugin stores a
sequence-numbered key with `ctx.storage.set` and acknowledges it in its hook result; the host
records every acknowledged write. After a fault-free warm-up, an injector hits a random running
worker every `fault_every_s` with one of:

- `sigkill`: SIGKILL through its pidfd;
- `sigstop_cont`: SIGSTOP, then SIGCONT a little later (shorter than the hook budget);
- `sigstop_leave`: SIGSTOP and never SIGCONT: left to the hook budget and the liveness kill;
- `log_flood`: a hook that makes the plugin log thousands of lines (the host rate-limits them);
- `garbage`: a hook that makes the plugin find its channel socket and write undecodable frames
  into it until the host kills it at the bad-frame threshold.

The manager restarts every killed worker (backoff, circuit breaker raised out of the way). The
report says how many dispatches per second were held, faults by kind, calls that failed cleanly
(timed out, errored, or resolved to `continue` because the worker died), calls that did not fail
cleanly (an exception out of the bus, or a dispatch slower than budget + liveness window + 1 s),
acknowledged writes lost (checked live, then again after shutdown through a fresh database
handle, with SQLite's integrity check), stray processes after shutdown, and host RSS.

The plugin the workers run and the fault injector live in `plugbox.bench._faults`; this module owns
the load, the host set-up, the run and its report.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from plugbox.bench._faults import CHAOS_PLUGIN, FAULT_KINDS, WRITE_EVENT, _Injector, session_of
from plugbox.bench._plugins import carried, carrying, install
from plugbox.bench._proc import alive, host_memory_kb
from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host, HostObserver
from plugbox.lifecycle import Status
from plugbox.settings import Settings, load_settings
from plugbox.storage.kv import PluginStorage
from plugbox.storage.opening import open_database

__all__ = ["CHAOS_PLUGIN", "FAULT_KINDS", "Load", "run_chaos", "start_host", "zygote_children"]

CLEANUP_WAIT_S = 5.0

Progress = Callable[[str], None]


@dataclass
class Load:
    """Lanes of write dispatches, one plugin per session; what they saw."""

    host: Host
    plugin_ids: list[str]
    lanes_per_plugin: int
    key_space: int | None = None  # soak: keys rotate over this many per plugin; chaos: every key is new
    slow_after_s: float = 10.0
    acked: dict[tuple[str, str], str] = field(default_factory=dict)
    dispatches: int = 0
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    unclean: collections.Counter[str] = field(default_factory=collections.Counter)
    skipped: int = 0
    per_second: collections.Counter[int] = field(default_factory=collections.Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)
    _seq: dict[str, itertools.count[int]] = field(default_factory=dict)

    def run(self) -> list[asyncio.Task[None]]:
        self.started = time.monotonic()
        return [asyncio.ensure_future(self._lane(i, pid))
                for i, pid in enumerate(self.plugin_ids) for _ in range(self.lanes_per_plugin)]

    async def _lane(self, index: int, plugin_id: str) -> None:
        host = self.host
        session = session_of(index)
        seq = self._seq.setdefault(plugin_id, itertools.count())
        while not self.stop.is_set():
            # restarting after a fault? (read live, not through a view snapshot: this loop is the load)
            if host.manager.get(plugin_id).status != Status.ENABLED:
                self.skipped += 1
                await asyncio.sleep(0.02)
                continue
            n = next(seq)
            key = f"k{n % self.key_space if self.key_space else n:09d}"
            value = f"{plugin_id}:{n}"
            t0 = time.monotonic()
            try:
                outcome = await host.bus.execute(WRITE_EVENT, carrying({"key": key, "value": value}, session), session)
            except Exception as exc:  # never expected: the bus turns every failure into an outcome
                self.unclean[f"raised {type(exc).__name__}"] += 1
                continue
            done = time.monotonic()
            self.dispatches += 1
            self.per_second[int(done - self.started)] += 1
            if done - t0 > self.slow_after_s:
                self.unclean["slower than budget + liveness window + 1 s"] += 1
            data = carried(outcome.data)
            if isinstance(data, dict) and data.get("ack") == key and data.get("value") == value:
                self.acked[(plugin_id, key)] = value
            elif outcome.timed_out:
                self.failed["timed out (treated as continue)"] += 1
            elif outcome.errors:
                self.failed["handler error"] += 1
            else:
                self.failed["worker gone (resolved to continue)"] += 1
            if data is None or not isinstance(data, dict) or "ack" not in data:
                # A dead worker's hook resolves at once, without yielding: back off a little, as a
                # client would, or this lane would starve the loop (and the restart it waits for).
                await asyncio.sleep(0.005)

    def rate(self, start_s: float, end_s: float) -> float:
        """Dispatches per second over whole seconds [start_s, end_s) since the lanes started."""
        seconds = range(int(start_s), int(end_s))
        return round(sum(self.per_second[s] for s in seconds) / max(1, len(seconds)), 1)

    def lost(self, storage: PluginStorage) -> list[dict[str, str]]:
        lost = []
        for (plugin_id, key), value in self.acked.items():
            found, stored = storage.get(plugin_id, key)
            if not found or (self.key_space is None and stored != value):
                lost.append({"plugin": plugin_id, "key": key, "value": value, "stored": repr(stored)})
        return lost


def chaos_settings(root: Path, *, hook_budget_ms: int = 1000, liveness_window_ms: int = 1000) -> Settings:
    """The operator's settings (environment, config file) with a temporary data dir, a short hook
    budget and liveness window (so a stopped worker is killed within seconds), fast restarts, and
    the circuit breaker out of the way (every plugin keeps being restarted)."""
    base = load_settings()
    return msgspec.structs.replace(
        base, data_dir=str(root / "data"), plugins_dir=str(root / "plugins"), hook_budget_ms=hook_budget_ms,
        liveness_window_ms=liveness_window_ms, breaker_threshold=1_000_000, restart_backoff_initial_ms=50,
        restart_backoff_max_ms=500,
    )


async def start_host(settings: Settings, plugins_dir: Path, n: int, progress: Progress) -> tuple[Host, list[str]]:
    host = Host(settings, engine=LoopbackEngine(), bundled=False)
    await host.start(restore=False)
    ids = [f"chaos-{i:03d}" for i in range(n)]
    progress(f"enabling {n} confined plugins")
    for i, plugin_id in enumerate(ids):
        await host.loopback.create_session(session_of(i))
        host.load_plugin(install(plugins_dir, plugin_id, CHAOS_PLUGIN, ["storage:use", "hooks:modify"]))
        await host.set_active_sessions(plugin_id, [session_of(i)])
    results = await asyncio.gather(*(host.enable(p) for p in ids), return_exceptions=True)
    failures = [str(r) for r in results if isinstance(r, BaseException)]
    if failures:
        await host.stop()
        raise RuntimeError(f"{len(failures)} of {n} plugins did not enable; first: {failures[0]}")
    return host, ids


def zygote_children(zygote_pid: int | None) -> set[int]:
    """Live processes whose parent is the zygote (its workers)."""
    if zygote_pid is None:
        return set()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == zygote_pid:
            found.add(int(name))
    return found


def worker_pid(host: Host, plugin_id: str) -> int | None:
    return host.plugin(plugin_id).worker_pid


async def _track_pids(host: Host, ids: list[str], seen: set[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        seen.update(p for p in (worker_pid(host, i) for i in ids) if p is not None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def wait_gone(pids: set[int], zygote: int | None) -> tuple[list[int], bool]:
    deadline = time.monotonic() + CLEANUP_WAIT_S
    while True:
        workers = sorted(p for p in pids if alive(p))
        zyg = zygote is not None and alive(zygote)
        if (not workers and not zyg) or time.monotonic() > deadline:
            return workers, zyg
        await asyncio.sleep(0.05)


class _DeathCounter(HostObserver):
    """Worker deaths the manager acted on, by reason."""

    def __init__(self) -> None:
        self.deaths: collections.Counter[str] = collections.Counter()

    def worker_failed(self, plugin_id: str, restarting: bool, reason: str) -> None:
        self.deaths[reason[:120]] += 1


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)


async def run_chaos(
    *, plugins: int = 20, duration_s: float = 60.0, warmup_s: float | None = None, fault_every_s: float = 0.25,
    lanes_per_plugin: int = 2, seed: int | None = None, progress: Progress = lambda _m: None,
    settings: Callable[[Path], Settings] = chaos_settings,
) -> dict[str, Any]:
    """Run the scenario on a temporary data dir and return the report (plain JSON data)."""
    seed = seed if seed is not None else random.randrange(1 << 32)
    warmup = warmup_s if warmup_s is not None else min(5.0, duration_s / 5)
    with tempfile.TemporaryDirectory(prefix="plugbox-chaos-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # plugin dirs must be reachable by the uid a root-started worker drops to
        s = settings(root)
        host, ids = await start_host(s, root / "plugins", plugins, progress)
        zygote = host.zygote.pid
        seen: set[int] = set()
        stop_tracking = asyncio.Event()
        tracker = asyncio.ensure_future(_track_pids(host, ids, seen, stop_tracking))
        budget_s = s.hook_budget_ms / 1000
        load = Load(host, ids, lanes_per_plugin, slow_after_s=budget_s + s.liveness_window_ms / 1000 + 1)
        injector = _Injector(host, ids, fault_every_s, budget_s / 2, random.Random(seed))
        observer = _DeathCounter()
        host.add_observer(observer)
        deaths = observer.deaths
        rss_before = host_memory_kb()["VmRSS"]
        try:
            lanes = load.run()
            progress(f"load: {len(lanes)} lanes of write dispatches; warm-up {warmup:g} s without faults")
            await asyncio.sleep(warmup)
            progress(f"injecting a fault every {fault_every_s:g} s for {duration_s - warmup:g} s")
            stop_faults = asyncio.Event()
            faults = asyncio.ensure_future(injector.run(stop_faults))
            await asyncio.sleep(max(0.0, duration_s - warmup))
            stop_faults.set()
            await faults
            left_alive = injector.release()
            load.stop.set()
            await asyncio.wait(lanes, timeout=load.slow_after_s + 5)
            for task in lanes:
                task.cancel()
            rss_after = host_memory_kb()
            lost_live = load.lost(host.storage)
            seen |= zygote_children(zygote)
        finally:
            stop_tracking.set()
            await tracker
            progress("stopping the host and every worker")
            for task in list(injector.side_tasks):
                task.cancel()
            await host.stop()
        strays, zygote_left = await wait_gone(seen, zygote)
        progress("re-reading every acknowledged write through a fresh database handle")
        db = open_database(s)
        try:
            lost_after = load.lost(PluginStorage(db))
            integrity = db.integrity_check()
        finally:
            db.close_sync()
    elapsed = duration_s
    return {
        "bench": "plugbox",
        "scenario": "chaos",
        "options": {"plugins": plugins, "duration_s": duration_s, "warmup_s": warmup, "fault_every_s": fault_every_s,
                    "lanes": lanes_per_plugin * plugins, "seed": seed},
        "settings": {k: getattr(s, k) for k in ("hook_budget_ms", "liveness_window_ms", "breaker_threshold",
                                                "restart_backoff_initial_ms", "restart_backoff_max_ms",
                                                "confinement")},
        "dispatches": {
            "total": load.dispatches,
            "per_s_overall": round(load.dispatches / elapsed, 1),
            "per_s_warmup": load.rate(0, warmup),
            "per_s_under_faults": load.rate(warmup, duration_s),
            "min_1s_under_faults": min((load.per_second[t] for t in range(int(warmup), int(duration_s))), default=0),
            "skipped_plugin_restarting": load.skipped,
        },
        "faults_injected": dict(injector.injected),
        "worker_deaths_by_reason": dict(deaths.most_common()),
        "stopped_workers_left_alive_at_end": left_alive,
        "failed_cleanly": dict(load.failed),
        "failed_uncleanly": dict(load.unclean),
        "writes": {
            "acknowledged": len(load.acked),
            "lost_live": len(lost_live),
            "lost_after_shutdown": len(lost_after),
            "lost_examples": (lost_live + lost_after)[:5],
            "integrity_check_ok": integrity,
        },
        "processes": {"workers_seen": len(seen), "stray_workers": strays, "zygote_left_running": zygote_left},
        "host_rss_mb": {"before": _mb(rss_before), "after": _mb(rss_after["VmRSS"]), "peak": _mb(rss_after["VmHWM"])},
        "notes": [
            f"host RSS is this process's, which also holds the scenario's record of every acknowledged write "
            f"({len(load.acked)} entries, roughly 0.25 kB each); `--scenario soak` watches the host for drift",
            "stopped_workers_left_alive_at_end: SIGSTOPped in the last seconds, before the hook budget and the "
            "liveness window had run out; they are SIGCONTed, then stopped with the host",
        ],
    }
