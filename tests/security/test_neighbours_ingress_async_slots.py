"""Slow async ingress handlers of several plugins must not make a victim's delivery wait for all of
their backlogs.

Async deliveries are handed to plugins through `ingress_max_in_flight` slots host-wide, of which
one plugin takes at most `ingress_max_in_flight_per_plugin` ("one slow or flooded plugin holds at
most this many of the host-wide slots"). Per-plugin caps add up: `ingress_max_in_flight /
ingress_max_in_flight_per_plugin` slow plugins (4 by default) hold every slot. Each freed slot then
went to the oldest due delivery of any plugin with room (`IngressStore._due` orders by `next_at`),
and a flooded plugin's backlog is older than the victim's new delivery: the victim waited until the
attackers' whole queues were drained. The handlers answer 200 within their budget, so no timeout,
breaker or drop is ever charged to them; the authors of the slow plugins fill their own queues by
posting to their own routes (measured before the fix: the victim's one delivery went after 47 of
the attackers' 48 and waited their whole backlog, 3.5 s here; by default up to 4 x 1000 deliveries
of up to 30 s each / 8 slots, about 4 hours).

Real confined workers, through the HTTP API. Asserts: the flood ran (every attacker delivery was
queued and delivered, through handlers that each took their time), the victim's delivery was handed
over after at most a few of the attackers' (those already running, and one per freed slot), and the
victim was charged nothing.
"""

from __future__ import annotations

import asyncio
import sys
import time

import httpx
import pytest

from plugbox.host import Host
from plugbox.lifecycle import Status

from .conftest import Attack, enable

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(180)]

SLOTS, PER_PLUGIN = 4, 2  # two slow plugins hold every slot
ATTACKERS = ("slow1", "slow2")
BACKLOG = 24  # deliveries queued to each slow plugin before the victim's
ROUTE = [{"route": "in", "mode": "async", "signature": {"scheme": "none"}}]

SLOW = """
import asyncio
from plugbox.sdk import Plugin


class Slow(Plugin):
    def on_load(self, ctx):
        ctx.register_webhook("in", self.answer)

    async def answer(self, request):
        await asyncio.sleep(0.3)  # well within its budget: no timeout is ever charged
        return {"status": 200, "body": "ok"}
"""
FAST = """
from plugbox.sdk import Plugin


class Fast(Plugin):
    def on_load(self, ctx):
        ctx.register_webhook("in", self.answer)

    async def answer(self, request):
        return {"status": 200, "body": "ok"}
"""


def _delivered(host: Host, plugin: str) -> int:
    return len(host.ingress.deliveries(plugin, state="delivered", limit=1000))


@pytest.mark.parametrize("settings_overrides", [{
    "allow_unsigned_ingress": True, "ingress_max_in_flight": SLOTS, "ingress_max_in_flight_per_plugin": PER_PLUGIN}])
async def test_slow_neighbours_holding_every_delivery_slot_do_not_queue_the_victim_behind_their_backlogs(
        host: Host, attack: Attack, client: httpx.AsyncClient) -> None:
    for plugin, code in ((ATTACKERS[0], SLOW), (ATTACKERS[1], SLOW), ("victim", FAST)):
        entry = await enable(host, attack.write_plugin(code, id=plugin, permissions=["webhook:ingress"],
                                                       ingress=ROUTE))
        assert entry.status == Status.ENABLED, entry.error
    for n in range(BACKLOG):
        for plugin in ATTACKERS:
            r = await client.post(f"/api/ingress/{plugin}/default/in", content=f'{{"n": {n}}}'.encode())
            assert r.status_code == 202, r.text
    await asyncio.sleep(0.1)  # the slow handlers hold every slot
    started = time.monotonic()
    r = await client.post("/api/ingress/victim/default/in", content=b'{"n": "victim"}')
    assert r.status_code == 202, r.text
    while _delivered(host, "victim") < 1:
        assert time.monotonic() - started < 60, "the victim's delivery was never handed over"
        await asyncio.sleep(0.02)
    waited = time.monotonic() - started
    ahead = sum(_delivered(host, p) for p in ATTACKERS)
    print(f"\nvictim's delivery handed over after {ahead} of the attackers' {2 * BACKLOG} deliveries, "
          f"having waited {waited:.2f} s (their handlers take 0.3 s each, {SLOTS} slots)")
    # At most those running when it came, and one per slot freed before it got one.
    assert ahead <= 2 * SLOTS, f"the victim waited for {ahead} of its neighbours' deliveries ({waited:.2f} s)"
    # The flood itself ran: every slow delivery is handed over in the end.
    deadline = time.monotonic() + 60
    while sum(_delivered(host, p) for p in ATTACKERS) < 2 * BACKLOG:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    victim = host.manager.get("victim")
    assert victim.status == Status.ENABLED and victim.record.consecutive_failures == 0
    await attack.aftermath()
