"""The `webhook:*` events a plugin's deliveries fire stay that plugin's doing.

A plugin's sends fire `message:sending`/`message:sent` to every observer, and as their cause they
get only a share of each observer's unanswered calls (`hook_observers_pending_per_cause`): a flood
of sends cannot crowd out the events an observer gets from the engine. But while the operator
subscribes a webhook to message events, each send also queues a delivery, and every attempt of it
fires `webhook:error` (or `webhook:delivered` and `webhook:after`) to every observer. The delivery
row records its cause, yet the delivery worker fired those events as the host's own (no cause):
they took the observer's whole cap (`hook_observers_pending`), its engine events past it were
dropped, and the drops were charged to the observer itself. The flooder's drops were laundered
through the queue.

Measured before the fix: with a subscription to a receiver that cannot be reached, a flooder's
deliveries retrying, and a victim observing `webhook:error` (slowly) and `message:received`, the
victim was charged 1,397 drops in about 3 s, the flooder none, and 0 of 3 inbound
messages reached it.

Real confined workers. Asserts: the flood ran (its deliveries failed and fired `webhook:error`
events at the victim), every inbound message reached the victim, the victim was never charged a
drop, and the flooder was.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from plugbox.lifecycle import Status
from plugbox.webhooks import parse_spec

from .conftest import SESSION, Attack, enable, wait_for
from .test_neighbours_webhooks import flooder

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(120)]

FLOODER = flooder(8)

# Watches delivery failures slowly, and records every inbound message it sees.
VICTIM = """
import asyncio
from plugbox.sdk import Plugin


class Victim(Plugin):
    def on_load(self, ctx):
        self.errors = 0
        ctx.register_hook("webhook:error", self.on_error)
        ctx.register_hook("message:received", self.on_message)

    async def on_error(self, hook):
        self.errors += 1
        if self.errors == 1:
            await self.ctx.storage.set("saw-webhook-error", True)
        await asyncio.sleep(1.0)

    async def on_message(self, hook):
        await self.ctx.storage.set("got:" + hook.data["body"], True)
"""


@pytest.mark.parametrize("settings_overrides", [{
    "hook_observers_pending": 8, "hook_observers_pending_per_cause": 2, "webhook_max_attempts": 1000,
    "webhook_backoff_initial_ms": 20, "webhook_backoff_max_ms": 50, "webhook_pending_per_cause": 40}])
async def test_the_webhook_events_of_a_send_flood_are_charged_to_the_flooder_not_the_observer(
        attack: Attack) -> None:
    host = attack.host
    # A receiver that cannot be reached: every attempt fails and fires webhook:error.
    await host.webhooks.create(parse_spec({"url": "https://receiver.invalid/hook", "events": ["message:sent"]}))
    victim = await enable(host, attack.write_plugin(VICTIM, id="victim", permissions=["storage:use"]))
    assert victim.status == Status.ENABLED, victim.error
    flooder = await enable(host, attack.write_plugin(FLOODER, id="flooder", permissions=["messages:send"]))
    assert flooder.status == Status.ENABLED, flooder.error
    # The attack ran: its deliveries fail and their webhook:error events reach the victim.
    await wait_for(lambda: host.storage.get("victim", "saw-webhook-error")[0], within=60)
    await asyncio.sleep(1.0)  # the failures keep coming
    bodies = [f"inbound-{n}" for n in range(3)]
    for body in bodies:
        await host.engine.inject_inbound(SESSION, "15550004444@c.us", body)
        await asyncio.sleep(0.3)
    await asyncio.sleep(0.5)
    got = [b for b in bodies if host.storage.get("victim", "got:" + b)[0]]
    print(f"\ninbound messages that reached the victim: {len(got)} of {len(bodies)}; drops charged: "
          f"victim {host.bus.dropped('victim')}, flooder {host.bus.dropped('flooder')}")
    assert host.bus.dropped("victim") == 0, "the observer was charged for events the flooder's deliveries fired"
    assert got == bodies
    assert host.bus.dropped("flooder") > 0
    await host.disable("flooder")
    await attack.aftermath()
