"""Noisy neighbours that read just slowly enough: many plugins whose queues stay below their
high-water marks must not make the host keep their sum either (SPEC §6: every host resource a
plugin can make the host spend is accounted to it; the host as a whole stays bounded).

Several real, confined slow readers each ask for 14 values of 64 KiB through the SDK, then block
their worker's loop (time.sleep) so it reads nothing for a while, then read the answers and ask
again. 14 x 64 KiB is below the 1 MiB mark, whatever the socket buffers hold: no slow reader is
ever paused or drain-timed-out, and without the host-wide charge of the whole queue none was
ever charged. Together they keep more than the host's `channel_bytes_total` (small here): the
host's periodic sweep measures every queue and ends the slow readers keeping the most over their
fair share. The victim beside them is probed throughout and must keep storing every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field

import pytest

from plugbox.host import Host
from plugbox.lifecycle import Status
from plugbox.lifecycle.entry import PluginEntry
from tests.security.conftest import WritePlugin, enable, wait_for
from tests.security.test_neighbours_channel import _probe, _probe_for, _victim, _victim_unharmed

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(120)]

READERS = 8
TOTAL = 4 << 20  # the smallest total the default 1 MiB high-water mark allows
LONG_DRAIN = {"channel_drain_timeout_ms": 60000}  # (never above the mark anyway: no drain timeout)

SLOW_READER = '''
import asyncio
import time

from plugbox.sdk import Plugin

ASKS = 14  # of a 64 KiB value: 896 KiB in all, below the 1 MiB mark
PAUSE_S = 1.5  # its loop blocked: nothing read meanwhile


class SlowReader(Plugin):
    async def on_enable(self, ctx):
        await ctx.storage.set("big", "x" * (64 << 10))
        self.task = asyncio.ensure_future(self.read_slowly())

    async def read_slowly(self):
        while True:
            asks = [asyncio.ensure_future(self.ctx.storage.get("big")) for _ in range(ASKS)]
            for _ in range(3):  # the asks are written, and flushed
                await asyncio.sleep(0)
            time.sleep(PAUSE_S)  # a sync wait on the loop: the worker stops reading its channel
            await asyncio.gather(*asks)  # then it reads every answer, and asks again
'''


@dataclass
class Sample:
    queued: int  # what the host keeps for the live slow readers (their queues and held answers)
    measures: int  # the host's sweeps so far (`HeldTotal.measure`)


@dataclass
class Seen:
    """What the slow readers' channels kept, sampled from their own books."""

    samples: list[Sample] = field(default_factory=list)
    below_mark: set[str] = field(default_factory=set)  # readers seen with a queue, below the mark
    most_queued: int = 0  # the largest queue of one reader seen
    paused: int = 0  # backpressure pauses of the readers (above the mark: must not happen)
    victim_kept: int = 0  # the most the victim was charged

    @property
    def most(self) -> int:
        return max((s.queued for s in self.samples), default=0)

    def longest_over(self, total: int) -> int:
        """The most sweeps one stretch of samples over `total` lasted: 0 or 1 if the first sweep
        after the queues grew past it brought them back under."""
        longest, start = 0, None
        for s in self.samples:
            if s.queued <= total:
                start = None
                continue
            start = s.measures if start is None else start
            longest = max(longest, s.measures - start)
        return longest


async def _read_slowly(host: Host, write_plugin: WritePlugin, seen: Seen) -> list[PluginEntry]:
    high_water = host.settings.channel_high_water_bytes
    books = host.channel_bytes
    readers: list[PluginEntry] = []
    pauses: dict[str, int] = {}

    async def sample() -> None:
        while True:
            total = 0
            for entry in readers:
                runtime = entry.runtime
                if runtime is None:
                    continue
                stats = runtime.channel_stats()
                if stats.gone is None:
                    total += stats.queued_bytes + stats.held_bytes
                    if 0 < stats.queued_bytes < high_water:
                        seen.below_mark.add(entry.plugin_id)
                    seen.most_queued = max(seen.most_queued, stats.queued_bytes)
                    pauses[f"{entry.plugin_id}:{id(runtime)}"] = stats.backpressure_pauses
            seen.samples.append(Sample(total, books.measures))
            seen.victim_kept = max(seen.victim_kept, books.kept_by().get("victim", 0))
            await asyncio.sleep(0.005)

    sampler = asyncio.ensure_future(sample())
    try:
        for i in range(READERS):
            entry = await enable(host, write_plugin(SLOW_READER, id=f"slow{i}", permissions=["storage:use"]))
            assert entry.status == Status.ENABLED, entry.error
            readers.append(entry)
        await _probe_for(host, 4.0, "during")  # the victim keeps its service meanwhile
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    seen.paused = sum(pauses.values())
    return readers


def _it_ran(seen: Seen, high_water: int) -> None:
    """The slow readers kept queues, below their marks, and were never paused for them."""
    assert len(seen.below_mark) >= READERS - 2, seen.below_mark
    assert 0 < seen.most_queued < high_water and seen.paused == 0


@pytest.mark.parametrize("settings_overrides", [{"channel_bytes_total": TOTAL, **LONG_DRAIN}])
async def test_many_workers_reading_slowly_below_their_marks_keep_no_more_than_the_host_total(
        host: Host, write_plugin: WritePlugin) -> None:
    victim = await _victim(host, write_plugin)
    await _probe(host, "before")
    seen = Seen()
    readers = await _read_slowly(host, write_plugin, seen)
    books = host.channel_bytes
    print(f"\nhost-wide bound {TOTAL}: peak kept {books.peak} (books), {seen.most} (sampled), "
          f"longest over it {seen.longest_over(TOTAL)} sweeps of {books.measures}; "
          f"ended {dict(books.reclaimed)}, victim charged at most {seen.victim_kept}")
    _it_ran(seen, host.settings.channel_high_water_bytes)
    # It failed: the books never settled above the total, and what the queues really kept went
    # past it only until the next sweep (by what they grew since the last one).
    assert books.peak <= TOTAL
    assert seen.longest_over(TOTAL) <= 2
    # They were charged: the slow readers keeping the most over their share were ended, with a
    # reason naming the setting, as their own failures; the victim never.
    ended = set(books.reclaimed)
    assert ended and ended <= {r.plugin_id for r in readers}
    # (its own small queue is on the books too, as every plugin's is, but always within its share)
    assert "victim" not in books.refused and seen.victim_kept < TOTAL // (READERS + 1)
    failed = [r for r in readers if r.plugin_id in ended]
    await wait_for(lambda: all(r.failures for r in failed))
    # Their recorded failures, not their status: a reader ended once is restarted by its breaker,
    # and a running plugin's `error` is cleared.
    reasons = [failure.message for r in failed for failure in r.failures]
    assert any("channel_bytes_total" in reason and "over its fair share" in reason for reason in reasons), reasons
    # The host survives, and the victim was never touched.
    await _probe_for(host, 0.5, "after")
    _victim_unharmed(victim)
    assert host.zygote.pid is not None


@pytest.mark.parametrize("settings_overrides", [{"channel_bytes_total": 1 << 40, **LONG_DRAIN}])
async def test_without_a_host_total_the_same_slow_readers_keep_more_than_that_total(
        host: Host, write_plugin: WritePlugin) -> None:
    """The test above is not vacuous: with no host-wide bound to speak of, the same slow readers
    keep more than the total they are held to there, sweep after sweep (each bounded per plugin
    only, and never paused)."""
    victim = await _victim(host, write_plugin)
    seen = Seen()
    await _read_slowly(host, write_plugin, seen)
    books = host.channel_bytes
    print(f"\nno host-wide bound: peak kept {books.peak} (books), {seen.most} (sampled), "
          f"longest over {TOTAL}: {seen.longest_over(TOTAL)} sweeps of {books.measures}")
    _it_ran(seen, host.settings.channel_high_water_bytes)
    assert seen.most > TOTAL and seen.longest_over(TOTAL) > 5
    assert not books.reclaimed and not books.refused
    _victim_unharmed(victim)
