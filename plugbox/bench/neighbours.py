"""`plugbox bench --scenario neighbours`: does a plugin spend only its own budget?

For each attack class in `_attacks.ATTACKS`, a fresh host runs a victim plugin, probes it, then
enables one hostile neighbour beside it (both active on the same session) and probes the victim
again while the attack runs. A probe is one inbound message injected through the loopback engine,
the path every real message takes; it completes when the victim's handler has stored the message
body (a capability call through the bridge and the database writer), and fails past
`PROBE_TIMEOUT_S`. In the `fetch_slots` round the victim's handler also fetches a local URL.

Each row reports the victim's p50 before and during the attack, victim failures and status, the
host's RSS growth and log bytes during the attack, whether the attacker's config secret reached
the host log, and what the host charged the attacker with (its status, failures, last error, or
else the hook timeouts, dropped events and dropped webhook deliveries counted against it).
A row passes when the victim kept its service (p50 ≤ 3 x baseline or ≤ 50 ms, no failure, still
enabled) and the host did (RSS growth ≤ 150 MB, log ≤ 1 MB per plugin per minute, no secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from plugbox.bench._attacks import ATTACKS, SECRET, VICTIM, Attack
from plugbox.bench._plugins import install
from plugbox.bench._proc import host_memory_kb, percentile
from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.observer import HostObserver
from plugbox.settings import load_settings
from plugbox.webhooks.subscriptions import SubscriptionSpec

__all__ = ["run_neighbours"]

PROBE_TIMEOUT_S = 5.0
SESSION = "shared"
CHAT = "15550001111@c.us"
RSS_LIMIT_MB = 150.0
LOG_LIMIT_BYTES_PER_MIN = 1 << 20  # per plugin
PLUGINS = 2  # the victim and the attacker: the host log budget is per plugin

Progress = Any  # Callable[[str], None]


class _LogMeter(logging.Handler):
    """Counts what the host would print during the attack, and whether the secret was in it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.bytes = 0
        self.lines = 0
        self.secret_seen = 0
        self.counting = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.counting:
            return
        text = self.format(record)
        self.bytes += len(text.encode("utf-8", "replace")) + 1
        self.lines += 1
        if SECRET in text:
            self.secret_seen += 1


class _Charges(HostObserver):
    """What the host charged each plugin with besides its status: hook timeouts, dropped events,
    webhook deliveries of events it caused dropped past its share of the queue."""

    def __init__(self) -> None:
        self.timeouts: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.webhook_drops: dict[str, int] = {}

    def hook_timeout(self, plugin_id: str) -> None:
        self.timeouts[plugin_id] = self.timeouts.get(plugin_id, 0) + 1

    def hook_dropped(self, plugin_id: str) -> None:
        self.dropped[plugin_id] = self.dropped.get(plugin_id, 0) + 1

    def webhook_dropped(self, plugin_id: str, count: int) -> None:
        self.webhook_drops[plugin_id] = self.webhook_drops.get(plugin_id, 0) + count

    def describe(self, plugin_id: str) -> str:
        counts = ((self.timeouts.get(plugin_id, 0), "hook timeouts"),
                  (self.dropped.get(plugin_id, 0), "events dropped"),
                  (self.webhook_drops.get(plugin_id, 0), "webhook deliveries dropped"))
        return ", ".join(f"{n:,} {what}" for n, what in counts if n)


class _SlowServer:
    """A loopback HTTP server: /slow answers after 30 s, anything else at once."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> _SlowServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            if b" /slow " in request.split(b"\r\n", 1)[0]:
                await asyncio.sleep(30)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # A slow request still open when the run ends: Python 3.11's stream server asks a cancelled
            # handler for its exception and prints the CancelledError as an error; end quietly instead.
            pass
        finally:
            writer.close()


def _manifest_extra(attacker: bool) -> dict[str, Any]:
    props: dict[str, Any] = {"probeUrl": {"type": "string"}, "listOwn": {"type": "boolean"}}
    if attacker:
        props = {"apiToken": {"type": "string", "secret": True}, "slowUrl": {"type": "string"},
                 "sleepS": {"type": "number"}}
    return {"net": {"allow": ["127.0.0.1"]}, "configSchema": {"type": "object", "properties": props}}


async def _probe(host: Host, label: str, inflight: set[asyncio.Task[Any]]) -> float | None:
    """One inbound message; seconds until the victim stored it, or None past the timeout."""
    start = time.perf_counter()
    task = asyncio.ensure_future(host.loopback.inject_inbound(SESSION, CHAT, label))
    inflight.add(task)
    task.add_done_callback(inflight.discard)
    while time.perf_counter() - start < PROBE_TIMEOUT_S:
        found, value = host.storage.get("victim", "seen")
        if found and value == label:
            return time.perf_counter() - start
        await asyncio.sleep(0.0005)
    return None


def _reset_peak_rss() -> None:
    """Reset VmHWM (the kernel's peak-RSS mark) so that it measures the attack alone: a decode
    that balloons and frees memory within one loop iteration shows there and nowhere else."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _channel_charges(host: Host) -> dict[str, Any]:
    """What the attacker's channel was charged with, if its worker still runs (a killed one says so
    in its status and last error)."""
    runtime = host.manager.get("attacker").runtime
    stats = getattr(runtime, "channel_stats", None)
    if stats is None:
        return {}
    s = stats()
    return {"throttled": s.throttled, "backpressure_pauses": s.backpressure_pauses,
            "cpu_s": round(s.cpu_seconds, 3), "refused_calls": getattr(runtime, "refused_calls", 0)}


def _p50_ms(samples: list[float | None]) -> float | None:
    done = sorted(s for s in samples if s is not None)
    timed_out = len(samples) - len(done)
    if not samples:
        return None
    # A timed-out probe counts as the timeout: it is a sample of the victim's service, not a gap.
    values = sorted(done + [PROBE_TIMEOUT_S] * timed_out)
    return round(percentile(values, 0.5) * 1000, 2)


async def _round(attack: Attack, root: Path, duration_s: float, baseline_probes: int) -> dict[str, Any]:
    plugins = root / "plugins"
    settings = msgspec.structs.replace(
        load_settings(), data_dir=str(root / "data"), plugins_dir=str(plugins), fetch_exempt_hosts=("127.0.0.1",),
        **attack.settings)
    meter = _LogMeter()
    inflight: set[asyncio.Task[Any]] = set()
    async with _SlowServer() as server:
        charges = _Charges()
        host = Host(settings, engine=LoopbackEngine(), bundled=False, observers=[charges])
        await host.start(restore=False)
        try:
            await host.loopback.create_session(SESSION)
            host.load_plugin(install(plugins, "victim", VICTIM, ["storage:use", "net:fetch"], _manifest_extra(False)))
            host.load_plugin(install(plugins, "attacker", attack.source, list(attack.permissions),
                                     _manifest_extra(True)))
            base_url = f"http://127.0.0.1:{server.port}"
            victim_config: dict[str, Any] = {"listOwn": attack.victim_lists}
            if attack.fetch_probe:
                victim_config["probeUrl"] = f"{base_url}/fast"
            await host.set_config("victim", victim_config)
            if attack.subscribe:
                await host.webhooks.create(SubscriptionSpec(url=f"{base_url}/slow", events=attack.subscribe))
            await host.set_config("attacker", {"apiToken": SECRET, "slowUrl": f"{base_url}/slow",
                                               "sleepS": settings.hook_budget_ms / 1000 * 0.9})
            for plugin_id in ("victim", "attacker"):
                await host.set_active_sessions(plugin_id, [SESSION])
            await host.enable("victim")
            baseline = [await _probe(host, f"base-{i}", inflight) for i in range(baseline_probes)]
            rss_before = host_memory_kb()["VmRSS"]
            _reset_peak_rss()
            logging.getLogger().addHandler(meter)
            meter.counting = True
            attack_started = time.perf_counter()
            try:
                await host.enable("attacker")
            except Exception as exc:  # an attacker refused at enable is charged, not a bench failure
                enable_error: str | None = str(exc)[:200]
            else:
                enable_error = None
            during: list[float | None] = []
            i = 0
            while time.perf_counter() - attack_started < duration_s:
                during.append(await _probe(host, f"attack-{i}", inflight))
                i += 1
            elapsed = time.perf_counter() - attack_started
            rss_peak = host_memory_kb()["VmHWM"]
            meter.counting = False
            victim = host.plugin("victim")
            attacker = host.plugin("attacker")
            channel = _channel_charges(host)
        finally:
            logging.getLogger().removeHandler(meter)
            for task in list(inflight):
                task.cancel()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(30):
                    await host.stop()
    base_p50 = _p50_ms(baseline)
    during_p50 = _p50_ms(during)
    failures = sum(1 for s in during if s is None)
    rss_growth_mb = round((rss_peak - rss_before) / 1024, 1)
    log_per_min = round(meter.bytes / max(elapsed, 1e-3) * 60)
    victim_ok = (
        base_p50 is not None and during_p50 is not None
        and (during_p50 <= 3 * base_p50 or during_p50 <= 50.0)
        and failures == 0 and str(victim.status) == "enabled" and victim.consecutive_failures == 0
    )
    host_ok = (rss_growth_mb <= RSS_LIMIT_MB and log_per_min <= PLUGINS * LOG_LIMIT_BYTES_PER_MIN
               and not meter.secret_seen)
    failure = attacker.last_error
    last_error = f"{failure.kind}: {failure.message}" if failure is not None else attacker.error
    return {
        "attack": attack.name,
        "what": attack.what,
        "victim_p50_base_ms": base_p50,
        "victim_p50_attack_ms": during_p50,
        "victim_probes": len(during),
        "victim_failures": failures,
        "victim_status": str(victim.status),
        "victim_breaker_count": victim.consecutive_failures,
        "host_rss_growth_mb": rss_growth_mb,
        "host_log_bytes_per_min": log_per_min,
        "secret_in_host_log": meter.secret_seen,
        "attacker_status": str(attacker.status),
        "attacker_failures": attacker.consecutive_failures,
        "attacker_charged": str(enable_error or last_error or charges.describe("attacker"))[:160],
        "attacker_channel": channel,
        "pass": victim_ok and host_ok,
    }


async def run_neighbours(*, duration_s: float, quick: bool, progress: Progress,
                         only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every attack class (or those named in `only`), one fresh host each."""
    unknown = set(only) - {a.name for a in ATTACKS}
    if unknown:
        raise RuntimeError(f"unknown attack class(es) {sorted(unknown)}; known: {[a.name for a in ATTACKS]}")
    rows = []
    root_logger = logging.getLogger()
    saved_level = root_logger.level
    root_logger.setLevel(logging.INFO)  # count what `plugbox serve` would print
    try:
        for attack in ATTACKS:
            if only and attack.name not in only:
                continue
            progress(f"neighbours: {attack.name}: {attack.what}")
            with tempfile.TemporaryDirectory(prefix="plugbox-neighbours-") as tmp:
                rows.append(await _round(attack, Path(tmp), duration_s, 20 if quick else 100))
    finally:
        root_logger.setLevel(saved_level)
    return {
        "bench": "neighbours",
        "scenario": "neighbours",
        "duration_s": duration_s,
        "rows": rows,
        "passed": sum(1 for r in rows if r["pass"]),
        "classes": len(rows),
    }
