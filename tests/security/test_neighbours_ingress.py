"""Ingress requests a plugin holds open (issue 12: any legal thing, a thousand times, while not
answering): a plugin's webhook handler that never answers holds at most its share of requests
(`ingress_in_flight_per_plugin`), bodies included; past it the next is answered 503 at once without
reaching the plugin. A victim's route beside it keeps answering, and the timeouts are charged to
the plugin that held the requests, which its breaker then stops. Real confined workers."""

from __future__ import annotations

import asyncio
import time

import pytest

from plugbox.host import Host
from plugbox.lifecycle import Status
from tests.security.conftest import WritePlugin, enable, wait_for

ROUTE = [{"route": "in", "signature": {"scheme": "none"}}]
HOLDS = """
import asyncio
from plugbox.sdk import Plugin


class Holds(Plugin):
    def on_load(self, ctx):
        ctx.register_webhook("in", self.hold)

    async def hold(self, request):
        await self.ctx.storage.set("held", request["body"])
        await asyncio.sleep(60)
"""
ANSWERS = """
from plugbox.sdk import Plugin


class Answers(Plugin):
    def on_load(self, ctx):
        ctx.register_webhook("in", self.answer)

    async def answer(self, request):
        return {"status": 200, "body": "ok " + request["body"]}
"""


def _request(body: str) -> dict[str, object]:
    return {"method": "POST", "path": "/ingress/x/in", "headers": {}, "query": {}, "body": body + "x" * (64 << 10)}


@pytest.mark.parametrize("settings_overrides", [{"allow_unsigned_ingress": True, "ingress_in_flight_per_plugin": 8}])
async def test_a_plugin_holding_its_ingress_requests_open_holds_only_its_share(
        host: Host, write_plugin: WritePlugin) -> None:
    perms = ["webhook:ingress", "storage:use"]
    attacker = await enable(host, write_plugin(HOLDS, id="attacker", permissions=perms, ingress=ROUTE))
    victim = await enable(host, write_plugin(ANSWERS, id="victim", permissions=perms, ingress=ROUTE))
    assert attacker.status == Status.ENABLED and victim.status == Status.ENABLED
    runtime = attacker.runtime
    assert runtime is not None
    held = [asyncio.ensure_future(host.dispatch_ingress("attacker", "in", _request(f"r{i}"))) for i in range(40)]
    await wait_for(lambda: host.storage.get("attacker", "held")[0])  # it ran: its handler got requests
    busy = [t for t in held if t.done()]
    # Past its share, the rest were answered at once, without reaching it.
    assert len(busy) == 32 and {t.result().outcome for t in busy} == {"busy"}
    assert {t.result().status for t in busy} == {503}
    assert runtime.channel_stats().requests_in_flight <= 8
    # Its neighbour's route answers meanwhile.
    start = time.monotonic()
    reply = await host.dispatch_ingress("victim", "in", _request("v"))
    assert reply.outcome == "ok" and reply.result["body"].startswith("ok v")
    assert time.monotonic() - start < 1.0
    # The held ones run out of budget: timeouts charged to the attacker, whose breaker stops it.
    outcomes = [r.outcome for r in await asyncio.gather(*held)]
    assert outcomes.count("timeout") == 8
    await wait_for(lambda: attacker.status == Status.ERROR)
    assert "hook budget exceeded repeatedly" in (attacker.error or "")
    assert attacker.ingress_in_flight == 0
    assert victim.status == Status.ENABLED and victim.record.consecutive_failures == 0
    assert (await host.dispatch_ingress("victim", "in", _request("after"))).outcome == "ok"
