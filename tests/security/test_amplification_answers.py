"""Amplification through payload size, answers (issue 12): a worker asks for large answers and
does not read them.

While the queue to a worker is above its high-water mark the host holds the answers of its calls
that complete meanwhile. The calls in flight (32) bound how many, not how large: 32 listings of
~10,000 keys of 505 characters, written straight to the channel and never read, held ~180 MB of
host memory for one plugin. The held answers' memory is now bounded (`channel_held_max_bytes`);
past it the attacker's own calls fail, and a worker that still does not read is ended.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from plugbox.bench._attacks import _CHANNEL
from plugbox.lifecycle import Status

from .conftest import Attack, enable, wait_for
from .test_amplification_fetch import RSS_GROWTH_LIMIT_KB, _kb, _reset_peak_rss
from .test_neighbours_storage import Victim, _assert_victim_served, _fire, victim  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(120)]

UNREAD_LISTS = _CHANNEL + """
import time

async def attack(ctx, cfg):
    fd = channel_fd()
    write_all(fd, b"".join(call_frame(900000 + i, "storage.list", {"prefix": ""}) for i in range(cfg["calls"])))
    time.sleep(cfg["seconds"])  # the loop never reads the answers
    return "slept"
"""


@pytest.mark.parametrize("settings_overrides", [{"channel_drain_timeout_ms": 1500}])
async def test_large_answers_a_worker_does_not_read_are_held_within_their_bound(
        attack: Attack, victim: Victim) -> None:  # noqa: F811
    host = attack.host
    for i in range(9_990):  # (its own keys, set up directly: the write budget would take minutes)
        await host.storage.set("hostile", f"{i:05d}" + "k" * 500, 1)
    baseline = await victim.p50()
    entry = await enable(host, attack.plugin(UNREAD_LISTS, {"calls": 32, "seconds": 3}, in_enable=False))
    assert entry.status == Status.ENABLED, entry.error
    runtime = entry.runtime
    assert runtime is not None
    seen = {"held_bytes": 0, "held_answers": 0, "refused": 0}

    async def sample() -> None:
        while True:
            stats = runtime.channel_stats()
            seen["held_bytes"] = max(seen["held_bytes"], stats.held_bytes)
            seen["held_answers"] = max(seen["held_answers"], stats.held_answers)
            seen["refused"] = max(seen["refused"], stats.refused_answers)
            await asyncio.sleep(0.005)

    _reset_peak_rss()
    before = _kb("VmRSS")
    sampler = asyncio.ensure_future(sample())
    fired = asyncio.ensure_future(_fire(attack, "hostile", {"id": "m1"}))
    await asyncio.sleep(0.5)  # the answers are held
    during = await victim.p50()
    await fired
    sampler.cancel()
    peak_kb = _kb("VmHWM") - before
    # It ran: its 32 listings were answered while it read nothing, and the host held them back.
    assert seen["held_answers"] >= 16, seen
    # It failed: the answers past the bound became errors, the host's memory stayed bounded.
    assert seen["refused"] >= 16, seen
    assert seen["held_bytes"] <= host.settings.channel_held_max_bytes, seen
    assert peak_kb < RSS_GROWTH_LIMIT_KB, f"host peak RSS grew {peak_kb >> 10} MiB"
    # It was charged: the worker that did not drain was ended, as its own failure.
    await wait_for(lambda: entry.record.consecutive_failures >= 1 or entry.status == Status.ERROR)
    assert "not reading its channel" in (entry.error or ""), entry.error
    _assert_victim_served(victim, baseline, during)
    await host.disable("hostile")  # (its handler would sleep again on the aftermath's own event)
    await attack.aftermath()
