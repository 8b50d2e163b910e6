"""Noisy neighbours together: many plugins that stop reading their channels, each within its own
per-plugin bounds, must not make the host keep their sum (SPEC §6: every host resource a plugin
can make the host spend is accounted to it; the host as a whole stays bounded).

Several real, confined flooders each ask for a 1 MiB value 400 times and never read a reply (the
`unread_replies` attack of `plugbox bench --scenario neighbours`); each alone stays within
`channel_high_water_bytes` plus a reply. Together they would keep about a MiB each: the host's
`channel_bytes_total` (small here) bounds the sum, and the flooders keeping the most over their
fair share are the ones ended. The victim beside them is probed throughout and must keep storing
every message; the drain timeout is long, so every flooder ended was ended by the host-wide bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field

import pytest

from plugbox.bench._attacks import ATTACKS
from plugbox.host import Host
from plugbox.lifecycle import Status
from plugbox.lifecycle.entry import PluginEntry
from tests.security.conftest import WritePlugin, enable, wait_for
from tests.security.test_neighbours_channel import _probe, _probe_for, _victim, _victim_unharmed

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(120)]

FLOODERS = 8
TOTAL = 4 << 20  # the smallest total the default 1 MiB high-water mark allows
REPLY = (1 << 20) + 4096  # one reply of the flood: its 1 MiB value and its framing
UNREAD = next(a for a in ATTACKS if a.name == "unread_replies")
LONG_DRAIN = {"channel_drain_timeout_ms": 60000}  # only the host-wide bound ends a flooder here


@dataclass
class Kept:
    """What the channels of the flooders kept beyond their marks, sampled from their own books."""

    most: int = 0  # the most seen at once, all flooders together
    blocked: set[str] = field(default_factory=set)  # flooders seen paused with bytes past the mark


async def _flood(host: Host, write_plugin: WritePlugin, kept: Kept) -> list[PluginEntry]:
    high_water = host.settings.channel_high_water_bytes
    flooders: list[PluginEntry] = []

    async def sample() -> None:
        while True:
            total = 0
            for entry in flooders:
                runtime = entry.runtime
                if runtime is None:
                    continue
                stats = runtime.channel_stats()
                if stats.gone is None:
                    past = max(0, stats.queued_bytes - high_water)
                    total += past + stats.held_bytes
                    if past:
                        kept.blocked.add(entry.plugin_id)
            kept.most = max(kept.most, total)
            await asyncio.sleep(0.005)

    sampler = asyncio.ensure_future(sample())
    try:
        for i in range(FLOODERS):
            plugin = write_plugin(UNREAD.source, id=f"flooder{i}", permissions=list(UNREAD.permissions))
            entry = await enable(host, plugin)
            assert entry.status == Status.ENABLED, entry.error
            flooders.append(entry)
        await _probe_for(host, 3.0, "during")  # the victim keeps its service meanwhile
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return flooders


@pytest.mark.parametrize("settings_overrides", [{"channel_bytes_total": TOTAL, **LONG_DRAIN}])
async def test_many_workers_that_stop_reading_keep_no_more_than_the_host_total_and_only_they_pay(
        host: Host, write_plugin: WritePlugin) -> None:
    victim = await _victim(host, write_plugin)
    await _probe(host, "before")
    kept = Kept()
    flooders = await _flood(host, write_plugin, kept)
    books = host.channel_bytes
    # It ran: the flooders stopped reading, and more of them than the total has room for.
    assert len(kept.blocked) >= 4, kept.blocked
    print(f"\nhost-wide bound {TOTAL}: peak kept {books.peak} (books), {kept.most} (sampled); "
          f"ended {dict(books.reclaimed)}, refused {dict(books.refused)}")
    # It failed: the host kept at most the total (the books settle within a loop iteration of a
    # write, so a sample may see one reply more).
    assert books.peak <= TOTAL
    assert kept.most <= TOTAL + REPLY
    # They were charged: the heaviest flooders were ended, with a reason naming the setting, as
    # their own failures; the victim never.
    ended = set(books.reclaimed)
    assert ended and ended <= {f.plugin_id for f in flooders}
    assert "victim" not in books.refused
    failed = [f for f in flooders if f.plugin_id in ended]
    await wait_for(lambda: all(f.failures for f in failed))
    # Their recorded failures, not their status: a flooder ended once is restarted by its breaker,
    # and a running plugin's `error` is cleared.
    reasons = [failure.message for f in failed for failure in f.failures]
    assert any("channel_bytes_total" in reason for reason in reasons), reasons
    # The host survives, and the victim was never touched.
    await _probe_for(host, 0.5, "after")
    _victim_unharmed(victim)
    assert host.zygote.pid is not None


@pytest.mark.parametrize("settings_overrides", [{"channel_bytes_total": 1 << 40, **LONG_DRAIN}])
async def test_without_a_host_total_the_same_flood_keeps_more_than_that_total(
        host: Host, write_plugin: WritePlugin) -> None:
    """The test above is not vacuous: with no host-wide bound to speak of, the flood keeps more
    than the total it is held to there (each flooder bounded only per plugin)."""
    victim = await _victim(host, write_plugin)
    kept = Kept()
    await _flood(host, write_plugin, kept)
    books = host.channel_bytes
    print(f"\nno host-wide bound: peak kept {books.peak} (books), {kept.most} (sampled)")
    assert books.peak > TOTAL + REPLY and kept.most > TOTAL + REPLY
    assert not books.reclaimed and not books.refused
    _victim_unharmed(victim)
