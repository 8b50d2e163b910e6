"""Noisy neighbours on the outbound webhook queue (issue 12): the queue is host-wide, and every
message a plugin sends is an event an operator's subscription may want. A hostile plugin floods
sends while a subscription to message events waits on a receiver that never answers, so every
delivery stays queued. It gets its share of the queue and no more: past it, its deliveries are
dropped and charged to it, while another plugin's sends and the engine's inbound messages still
queue, and the host survives. Real confined workers on both sides."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from plugbox.lifecycle import Status
from plugbox.observer import HostObserver
from plugbox.webhooks import parse_spec
from plugbox.webhooks.store import PENDING

from .conftest import SESSION, Attack, enable, wait_for

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(120)]

QUEUE_MAX = 100
SHARE = 40
CHAT = "15550002222@c.us"

# Sends as fast as replies come, on `lanes` tasks (`flooder(lanes)`).
_FLOODER = """
import asyncio
from plugbox.sdk import Plugin


class Flooder(Plugin):
    async def on_enable(self, ctx):
        self.lanes = [asyncio.ensure_future(self.lane()) for _ in range({lanes})]

    async def lane(self):
        while True:
            try:
                await self.ctx.messages.send_text("s1", "15550002222@c.us", "spam")
            except Exception:
                await asyncio.sleep(0.01)
"""


def flooder(lanes: int) -> str:
    return _FLOODER.format(lanes=lanes)


FLOODER = flooder(16)

# Sends one message when the test fires session:ready at it (it holds hooks:modify, so the bus
# awaits the handler and the send is done when the dispatch returns).
VICTIM = """
from plugbox.sdk import Plugin


class Victim(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("session:ready", self.ready)

    async def ready(self, hook):
        await self.ctx.messages.send_text("s1", "15550003333@c.us", "victim-hello")
"""


class Charges(HostObserver):
    def __init__(self) -> None:
        self.webhook_drops: dict[str, int] = {}

    def webhook_dropped(self, plugin_id: str, count: int) -> None:
        self.webhook_drops[plugin_id] = self.webhook_drops.get(plugin_id, 0) + count


def _pending_bodies(attack: Attack) -> list[Any]:
    rows = attack.host.webhooks.deliveries(state=PENDING, limit=QUEUE_MAX + 10)
    return [d.public()["payload"]["data"].get("body") for d in rows]


@pytest.mark.parametrize("settings_overrides", [{"webhook_queue_max": QUEUE_MAX, "webhook_pending_per_cause": SHARE,
                                                 "webhook_max_attempts": 100}])
async def test_a_send_flood_takes_only_its_share_of_the_webhook_queue_and_is_charged(attack: Attack) -> None:
    host = attack.host
    charges = Charges()
    host.add_observer(charges)
    # A receiver that cannot be reached: every delivery fails and waits for its retry, pending.
    await host.webhooks.create(parse_spec({"url": "https://receiver.invalid/hook",
                                           "events": ["message:sent", "message:received"]}))
    victim = await enable(host, attack.write_plugin(VICTIM, id="victim",
                                                    permissions=["messages:send", "hooks:modify"]))
    assert victim.status == Status.ENABLED, victim.error

    flooder = await enable(host, attack.write_plugin(FLOODER, id="flooder", permissions=["messages:send"]))
    assert flooder.status == Status.ENABLED, flooder.error
    # The attack ran: it sent past its share, and the deliveries beyond it were dropped, charged to it.
    await wait_for(lambda: host.webhooks.dropped("flooder") >= 3 * SHARE, within=60)
    bodies = _pending_bodies(attack)
    assert bodies.count("spam") == SHARE  # its share, not the whole queue
    assert len(bodies) < QUEUE_MAX

    # Others still queue: another plugin's send and the engine's inbound message, while it floods.
    await host.bus.execute("session:ready", {}, SESSION, plugin="victim")
    await host.engine.inject_inbound(SESSION, "15550004444@c.us", "inbound-hello")
    bodies = _pending_bodies(attack)
    assert "victim-hello" in bodies and "inbound-hello" in bodies
    assert bodies.count("spam") == SHARE

    # Charged: the flooder, in the service's books and the metrics' feed; never the victim.
    assert host.webhooks.dropped("victim") == 0
    assert set(charges.webhook_drops) == {"flooder"} and charges.webhook_drops["flooder"] > 0
    assert host.manager.get("victim").status == Status.ENABLED

    await host.disable("flooder")
    await attack.aftermath()


BIG_FLOODER = """
import asyncio
from plugbox.sdk import Plugin


class BigFlooder(Plugin):
    async def on_enable(self, ctx):
        self.lanes = [asyncio.ensure_future(self.lane()) for _ in range(8)]

    async def lane(self):
        while True:
            try:
                await self.ctx.messages.send_text("s1", "15550002222@c.us", "x" * 60000)
            except Exception:
                await asyncio.sleep(0.01)
"""

STORER = """
from plugbox.sdk import Plugin


class Storer(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("session:ready", self.ready)

    async def ready(self, hook):
        await self.ctx.storage.set("k", "v" * 1000)
        await self.ctx.messages.send_text("s1", "15550003333@c.us", "victim-hello")
"""

RATE = 256 << 10


def _queued_bytes(attack: Attack, body_has: str) -> int:
    rows = attack.host.webhooks.deliveries(state=PENDING, limit=100_000)
    return sum(len(d.body) for d in rows if body_has in d.body.decode())


@pytest.mark.parametrize("settings_overrides", [{"webhook_max_attempts": 100, "storage_write_bytes_per_s": RATE,
                                                 "storage_write_burst_bytes": RATE,
                                                 "storage_write_max_wait_ms": 200}])
async def test_the_webhook_rows_a_send_flood_causes_spend_its_own_write_budget(attack: Attack) -> None:
    """The queue's rows are database writes the flooder caused: they come out of its write budget
    (its sends wait, then its deliveries are dropped), never the host's or its neighbour's."""
    host = attack.host
    await host.webhooks.create(parse_spec({"url": "https://receiver.invalid/hook", "events": ["message:sent"]}))
    victim = await enable(host, attack.write_plugin(STORER, id="victim",
                                                    permissions=["messages:send", "storage:use", "hooks:modify"]))
    assert victim.status == Status.ENABLED, victim.error

    flooder = await enable(host, attack.write_plugin(BIG_FLOODER, id="flooder", permissions=["messages:send"]))
    assert flooder.status == Status.ENABLED, flooder.error
    started = asyncio.get_running_loop().time()
    # The attack ran: it sent far past what its budget lets it write, and the rest was dropped.
    await wait_for(lambda: host.webhooks.dropped("flooder") >= 50, within=60)
    await host.disable("flooder")
    elapsed = asyncio.get_running_loop().time() - started

    # Its queued rows are what its bucket allows (burst + rate over the flood), not what it asked for.
    assert _queued_bytes(attack, "xxxx") <= RATE + RATE * elapsed + 61_000
    budget = host.storage.write_budget
    assert budget.refused.get("flooder", 0) > 0 or budget.waited_s.get("flooder", 0) > 0

    # The victim still writes and still has its deliveries queued; its bucket was never touched.
    await host.bus.execute("session:ready", {}, SESSION, plugin="victim")
    assert _queued_bytes(attack, "victim-hello") > 0
    assert "victim" not in budget.refused and "victim" not in budget.waited_s
    assert host.webhooks.dropped("victim") == 0
    assert host.manager.get("victim").status == Status.ENABLED
    await attack.aftermath()
