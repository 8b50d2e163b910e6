"""Several plugins, each within its own host-CPU share, together past the host's total.

Per-plugin shares add up: three plugins at their full share each would take more of the host's
loop than the operator gave all plugins together (`channel_cpu_total_percent`). The host holds
their sum to the total, pausing the plugins that take more than a fair share of it, while a quiet
victim beside them is never paused and keeps its service.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from plugbox.bench._attacks import ATTACKS, VICTIM
from plugbox.host import Host
from plugbox.lifecycle import Status
from tests.security.conftest import WritePlugin, enable
from tests.security.test_neighbours_channel import PACE_S, _probe_for

pytestmark = pytest.mark.timeout(120)

FLOOD = next(a for a in ATTACKS if a.name == "inline_flood")
OWN, TOTAL, TOTAL_BURST = 0.10, 0.15, 0.05  # each flooder's own share, all together, the total's burst
FLOODERS = 3  # 3 x 10 % wanted against a 15 % total


@pytest.mark.parametrize("settings_overrides", [{
    "channel_cpu_percent": int(OWN * 100), "channel_cpu_burst_ms": 20,
    "channel_cpu_total_percent": int(TOTAL * 100), "channel_cpu_total_burst_ms": int(TOTAL_BURST * 1000)}])
async def test_plugins_within_their_own_shares_are_held_to_the_total_and_pay_for_it(
        host: Host, write_plugin: WritePlugin) -> None:
    victim = await enable(host, write_plugin(VICTIM, id="victim", permissions=["storage:use"]))
    assert victim.status == Status.ENABLED, victim.error
    flooders = []
    for n in range(FLOODERS):
        entry = await enable(host, write_plugin(FLOOD.source, id=f"flood-{n}", permissions=list(FLOOD.permissions)))
        assert entry.status == Status.ENABLED, entry.error
        flooders.append(entry)
    runtimes = [f.runtime for f in flooders]
    assert all(r is not None for r in runtimes)
    await asyncio.sleep(0.5)  # past the bursts: every flooder is at its steady rate
    before = sum(r.channel_stats().cpu_seconds for r in runtimes)  # type: ignore[union-attr]
    started = time.monotonic()
    latencies = await _probe_for(host, 3.0, "during", every=PACE_S)
    elapsed = time.monotonic() - started
    stats = [r.channel_stats() for r in runtimes]  # type: ignore[union-attr]
    spent = sum(s.cpu_seconds for s in stats) - before

    # The attack ran and was charged: every flooder was paused for the total, not only its own share.
    assert all(s.shared_pauses >= 1 for s in stats), [s.shared_pauses for s in stats]
    # Together they took the total (plus its burst and the settling step), not 3 x their own share.
    assert spent <= TOTAL * elapsed + TOTAL_BURST + 0.05, (spent, elapsed)
    assert spent < FLOODERS * OWN * elapsed * 0.75
    # Throttled, not killed; the victim was never paused and answered every probe.
    assert all(f.status == Status.ENABLED for f in flooders)
    assert victim.runtime is not None
    victim_stats = victim.runtime.channel_stats()
    assert victim_stats.throttled == victim_stats.shared_pauses == 0
    assert len(latencies) >= 3.0 / (PACE_S * 4)
    assert victim.status == Status.ENABLED and victim.record.consecutive_failures == 0
    assert host.channel_cpu.stats().over_share.keys() == {f"flood-{n}" for n in range(FLOODERS)}
