"""Noisy neighbours on the channel (issue 12, classes 1 and 2): whatever a plugin makes the host
spend through its own channel — bytes queued to it, decode memory, host CPU, log fields — is
bounded and charged to that plugin, while a victim plugin beside it keeps its service.

Each test runs a real victim and a real attacker (the attack plugins of `plugbox bench
--scenario neighbours`), probes the victim during the attack (an inbound message it must store),
and asserts: the attack ran, it failed (the host's memory stayed bounded, measured as the growth
of this process's peak RSS after resetting it, or by the channel's own books), the victim kept
working, and the attacker — never the victim — was charged.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from plugbox.bench._attacks import ATTACKS, VICTIM
from plugbox.host import Host
from plugbox.lifecycle import Status
from plugbox.lifecycle.entry import PluginEntry
from tests.security.conftest import SESSION, WritePlugin, enable, wait_for

pytestmark = pytest.mark.timeout(120)

SOURCES = {a.name: a for a in ATTACKS}
CHAT = "15550001111@c.us"
RSS_GROWTH_LIMIT_KB = 150 << 10  # the acceptance: host RSS growth <= 150 MB


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS, so the peak measures what follows


async def _victim(host: Host, write_plugin: WritePlugin) -> PluginEntry:
    entry = await enable(host, write_plugin(VICTIM, id="victim", permissions=["storage:use"]))
    assert entry.status == Status.ENABLED, entry.error
    return entry


async def _attacker(host: Host, write_plugin: WritePlugin, name: str) -> PluginEntry:
    attack = SOURCES[name]
    entry = await enable(host, write_plugin(attack.source, id="attacker", permissions=list(attack.permissions)))
    assert entry.status == Status.ENABLED, entry.error
    return entry


async def _probe(host: Host, label: str, within: float = 5.0) -> float:
    """One inbound message; seconds until the victim stored it (fails past `within`)."""
    start = time.monotonic()
    task = asyncio.ensure_future(host.engine.inject_inbound(SESSION, CHAT, label))
    try:
        while host.storage.get("victim", "seen") != (True, label):
            assert time.monotonic() - start < within, f"the victim did not store {label!r} within {within} s"
            await asyncio.sleep(0.002)
        return time.monotonic() - start
    finally:
        await asyncio.wait_for(task, within)


ENGINE_READ_LANES = 4  # lanes of the engine_reads attack as run here: each waits for its call
PACE_S = 0.02  # one victim message every 20 ms: a fraction of a 5 % share, however loaded the machine


async def _probe_for(host: Host, seconds: float, tag: str, every: float = 0.0) -> list[float]:
    """Probe the victim back to back, or one probe per `every` seconds: a victim that must stay
    within a small CPU share (the throttling test gives every plugin 5 % of a CPU) is probed at
    the pace of a quiet chat, not as fast as the host can go."""
    latencies = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        latencies.append(await _probe(host, f"{tag}-{i}"))
        i += 1
        if every:
            await asyncio.sleep(max(0.0, started + every - time.monotonic()))
    return latencies


def _victim_unharmed(victim: PluginEntry) -> None:
    assert victim.status == Status.ENABLED
    assert victim.record.consecutive_failures == 0


@pytest.mark.parametrize("settings_overrides", [{"channel_drain_timeout_ms": 1500}])
async def test_a_worker_that_stops_reading_its_replies_is_paused_then_killed_and_charged(
        host: Host, write_plugin: WritePlugin) -> None:
    """400 storage.get of a 1 MiB value written to the channel, then never a byte read: without
    backpressure the host queued every reply (+400 MB)."""
    victim = await _victim(host, write_plugin)
    await _probe(host, "before")
    _reset_peak_rss()
    rss_before = _kb("VmRSS")
    attacker = await _attacker(host, write_plugin, "unread_replies")
    runtime = attacker.runtime
    assert runtime is not None
    high_water = host.settings.channel_high_water_bytes
    queued: list[int] = []

    def watch() -> bool:
        stats = runtime.channel_stats()
        queued.append(stats.queued_bytes)
        return stats.gone is not None

    await wait_for(watch, within=10)
    # It ran: the host stopped reading it once the queue passed the mark, with its calls unread.
    assert runtime.channel_stats().backpressure_pauses >= 1
    assert max(queued) > high_water
    # It failed: the queue never held more than the mark plus one reply (1 MiB and its framing).
    assert max(queued) <= high_water + (1 << 20) + 4096
    assert _kb("VmHWM") - rss_before < RSS_GROWTH_LIMIT_KB
    # It was charged: ended, with a reason that names the limit, as its own failure.
    await wait_for(lambda: attacker.record.consecutive_failures >= 1 or attacker.status == Status.ERROR)
    assert "not reading its channel" in (attacker.error or "")
    assert "bytes queued" in (attacker.error or "")
    await _probe_for(host, 0.5, "after")
    _victim_unharmed(victim)


async def test_a_frame_of_empty_maps_costs_the_host_its_size_not_seventy_times_it(
        host: Host, write_plugin: WritePlugin) -> None:
    """Three 8 MiB storage.set frames of 8 M empty maps: decoded into Python objects they cost the
    host ~600 MB. The value is kept encoded, and charged to the attacker's storage quota."""
    victim = await _victim(host, write_plugin)
    await _probe(host, "before")
    _reset_peak_rss()
    rss_before = _kb("VmRSS")
    attacker = await _attacker(host, write_plugin, "decode_bomb")
    latencies = await _probe_for(host, 3.0, "during")
    # It ran: the 8 MiB value reached storage (encoded, as sent), charged to the attacker's quota.
    assert host.storage.usage("attacker") >= 8 << 20
    assert _kb("VmHWM") - rss_before < RSS_GROWTH_LIMIT_KB
    assert attacker.runtime is not None and attacker.runtime.channel_stats().cpu_seconds > 0
    assert max(latencies) < 5.0
    _victim_unharmed(victim)


@pytest.mark.parametrize("settings_overrides", [{"hook_budget_ms": 10000}])
async def test_a_hook_result_of_empty_maps_is_refused_undecoded_and_charged_to_its_handler(
        host: Host, write_plugin: WritePlugin) -> None:
    """A handler answers with 2 M empty maps (2 MiB on the wire, ~150 MB decoded): past its event's
    payload cap the data is refused without being decoded, as that handler's error."""
    victim = await _victim(host, write_plugin)
    await enable(host, write_plugin("""
        from plugbox.sdk import HookResult, Plugin

        class Bomb(Plugin):
            def on_load(self, ctx):
                ctx.register_hook("message:received", self.bomb, priority=1)

            def bomb(self, hook):
                return HookResult(data={**hook.data, "junk": [{}] * (2 << 20)})
    """, id="attacker", permissions=["hooks:modify"]))  # an observer's data is ignored outright
    _reset_peak_rss()
    rss_before = _kb("VmRSS")
    event = {"id": "m1", "chatId": CHAT, "body": "hi"}
    outcome = await (await host.bus.execute("message:received", event, SESSION)).settled()
    assert _kb("VmHWM") - rss_before < 50 << 10
    assert outcome.timed_out == []
    assert [plugin for plugin, _ in outcome.errors] == ["attacker"]
    assert "over the 524288-byte cap of message:received (not decoded)" in outcome.errors[0][1]
    assert "junk" not in outcome.data  # its data was discarded; the chain went on
    assert host.storage.get("victim", "seen") == (True, "hi")
    _victim_unharmed(victim)


@pytest.mark.parametrize("settings_overrides", [{"channel_cpu_percent": 5, "channel_cpu_burst_ms": 20}])
async def test_a_flood_of_inline_calls_is_throttled_on_its_own_channel(
        host: Host, write_plugin: WritePlugin) -> None:
    """64 lanes of storage.get as fast as replies come, each answered inline on the host's loop:
    the host time they take is charged to the attacker's CPU bucket, which pauses its channel."""
    victim = await _victim(host, write_plugin)
    await _probe_for(host, 0.3, "before", every=PACE_S)
    attacker = await _attacker(host, write_plugin, "inline_flood")
    runtime = attacker.runtime
    assert runtime is not None
    await _probe_for(host, 2.0, "during", every=PACE_S)
    stats = runtime.channel_stats()
    assert stats.throttled >= 1  # it ran, and paid for it
    # Over the attack, the host spent on it about its share (5 % of a CPU) plus its burst.
    assert stats.cpu_seconds < 0.05 * 3.0 + 0.02 + 0.1
    assert attacker.status == Status.ENABLED  # throttled, not killed
    assert victim.runtime is not None and victim.runtime.channel_stats().throttled == 0
    _victim_unharmed(victim)


async def test_log_fields_past_their_cap_are_not_decoded_and_the_line_stays_small(
        host: Host, write_plugin: WritePlugin) -> None:
    """Log lines with 20,000 fields each, as fast as the worker can send them."""
    victim = await _victim(host, write_plugin)
    attacker = await _attacker(host, write_plugin, "log_fields")
    await _probe_for(host, 1.0, "during")
    lines = [line["message"] for line in attacker.logs.recent]
    assert lines, "the attacker logged nothing"
    assert all("over the" in line and "cap: not shown" in line for line in lines)
    assert max(len(line) for line in lines) < 200
    _victim_unharmed(victim)


@pytest.mark.parametrize("settings_overrides", [{"channel_cpu_percent": 5, "channel_cpu_burst_ms": 20}])
async def test_waiting_calls_that_make_the_host_compute_are_charged_and_their_work_bounded(
        host: Host, write_plugin: WritePlugin, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lanes each opening chats of its own choosing and listing them all (engine.get_chats):
    calls that run as tasks, after the read batch that received them. The loop time of those tasks
    is charged to the attacker's CPU bucket and throttles it alone; the engine keeps a bounded
    number of chats, so no single listing can grow past that. (Each listing is made to hold the
    loop 10 ms more, as a larger engine would: what the host spends on them must stay near the
    attacker's share, 5 % of a CPU.)"""
    victim = await _victim(host, write_plugin)
    await _probe_for(host, 0.3, "before", every=PACE_S)
    listing = host.engine.get_chats
    spent: list[float] = []

    async def heavy_listing(session_id: str) -> list[dict[str, object]]:
        start = time.thread_time()  # CPU time of the loop thread: what the host charges
        while time.thread_time() - start < 0.010:
            pass
        chats = await listing(session_id)
        spent.append(time.thread_time() - start)
        return chats

    monkeypatch.setattr(host.engine, "get_chats", heavy_listing)
    attack = SOURCES["engine_reads"]
    # (4 new chats per listing rather than 64: on a loaded machine, at 5 % of a CPU, it lists soon;
    # 4 lanes rather than 16: what a lane's call in flight may cost past the share, below, is
    # then small beside the share itself, so a bucket that let through twice its share is caught)
    source = attack.source.replace('"shared"', repr(SESSION)).replace("range(64)", "range(4)")
    source = source.replace("range(16)", f"range({ENGINE_READ_LANES})")
    assert f"range({ENGINE_READ_LANES})" in source
    entry = await enable(host, write_plugin(source, id="attacker", permissions=list(attack.permissions)))
    assert entry.status == Status.ENABLED, entry.error
    runtime = entry.runtime
    assert runtime is not None
    await wait_for(lambda: len(spent) >= 1, within=30)  # it ran: it opened chats and listed them
    started, before = time.monotonic(), len(spent)
    during = await _probe_for(host, 3.0, "during", every=PACE_S)
    elapsed = time.monotonic() - started
    window = spent[before:]
    stats = runtime.channel_stats()
    assert len(await listing(SESSION)) <= host.settings.loopback_chats_per_session
    # Charged for what its calls' tasks computed, not only for its frames, and throttled for it:
    # over the window the host spent on its listings no more than its bucket let through: its
    # share of the time (5 % of a CPU), its burst (20 ms: full at most when the window opens), and
    # the debt it may be in when the window closes. Its channel is read again only once out of
    # debt, so that debt is at most what the calls already read when it went into debt charge
    # after: one call per lane of the attack, and the one that went into debt.
    assert stats.cpu_seconds >= sum(spent)
    assert stats.throttled >= 1
    allowed = 0.05 * elapsed + 0.02 + (ENGINE_READ_LANES + 1) * max(spent)
    assert sum(window) < allowed, (len(window), sum(window), elapsed, max(spent))
    assert entry.status == Status.ENABLED  # throttled, not killed
    assert victim.runtime is not None and victim.runtime.channel_stats().throttled == 0
    # the victim keeps its service (a percentile: one probe may meet the OS scheduler on a loaded CI box)
    assert statistics.median(during) < 0.25 and sorted(during)[int(0.9 * len(during))] < 1.0, during
    _victim_unharmed(victim)
