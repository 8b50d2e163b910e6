"""Several plugins, each within its own log budget, together past the host's total of log bytes.

One plugin's log budget (`log_bytes_per_minute`) keeps it from flooding the host log, but budgets
add up: a thousand plugins at theirs would put ~470 MB a minute there. The host holds all plugins'
log bytes to `log_bytes_per_minute_total`, dropping (and counting) only the lines of plugins over
their fair share of it, while a quiet plugin beside them keeps every line.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from plugbox.host import Host
from plugbox.lifecycle import Status
from tests.security.conftest import WritePlugin, enable

pytestmark = pytest.mark.timeout(120)

LOUD = '''
import asyncio
from plugbox.sdk import Plugin


class Loud(Plugin):
    async def on_enable(self, ctx):
        self.task = asyncio.ensure_future(self.flood())

    async def flood(self):
        while True:  # as fast as the channel takes them: its own budget drops the excess
            self.ctx.logger.info("L" * 1000)
            await asyncio.sleep(0.001)
'''

QUIET = '''
import asyncio
from plugbox.sdk import Plugin


class Quiet(Plugin):
    async def on_enable(self, ctx):
        self.task = asyncio.ensure_future(self.tick())

    async def tick(self):
        n = 0
        while True:
            self.ctx.logger.info(f"tick {n:04d} " + "q" * 90)
            n += 1
            await asyncio.sleep(0.5)
'''

OWN_PER_MIN, TOTAL_PER_MIN, BURST = 120_000, 180_000, 4_000  # 2 kB/s each, 3 kB/s for everyone
LOUD_PLUGINS = 3  # 3 x 2 kB/s wanted against a 3 kB/s total
SECONDS = 8.0


@pytest.mark.parametrize("settings_overrides", [{
    "log_bytes_per_minute": OWN_PER_MIN, "log_bytes_burst": BURST, "log_lines_per_window": 100_000,
    "log_bytes_per_minute_total": TOTAL_PER_MIN, "log_bytes_total_burst": BURST}])
async def test_plugins_within_their_own_log_budgets_are_held_to_the_total_and_lose_their_own_lines(
        host: Host, write_plugin: WritePlugin) -> None:
    started = time.monotonic()
    quiet = await enable(host, write_plugin(QUIET, id="quiet"))
    assert quiet.status == Status.ENABLED, quiet.error
    loud = []
    for n in range(LOUD_PLUGINS):
        entry = await enable(host, write_plugin(LOUD, id=f"loud-{n}"))
        assert entry.status == Status.ENABLED, entry.error
        loud.append(entry)
    await asyncio.sleep(SECONDS)
    elapsed = time.monotonic() - started
    printed = {e.plugin_id: sum(len(line["message"]) for line in e.logs.recent) for e in (*loud, quiet)}
    assert all(len(e.logs.recent) < (e.logs.recent.maxlen or 0) for e in loud)  # (every line kept is counted)
    loud_bytes = sum(printed[e.plugin_id] for e in loud)

    # The attack ran and its plugins paid: each lost lines to the total, not only to its own budget.
    over_share = host.manager.log_total.stats().over_share
    assert all(over_share.get(e.plugin_id, 0) > 0 for e in loud), over_share
    # Together they put about the total in the host log (+ one window of lag), not 3 x their budgets.
    assert loud_bytes + printed["quiet"] <= TOTAL_PER_MIN / 60 * (elapsed + 2.0) + BURST, printed
    assert loud_bytes < LOUD_PLUGINS * OWN_PER_MIN / 60 * elapsed * 0.75, printed
    # The quiet plugin lost nothing and the host kept serving everyone.
    assert quiet.logs.dropped == 0 and "quiet" not in over_share
    assert printed["quiet"] >= 100 * (SECONDS / 0.5 - 2)
    assert all(e.status == Status.ENABLED for e in (*loud, quiet))
    assert host.manager.log_total.stats().over_share.keys() == {e.plugin_id for e in loud}
