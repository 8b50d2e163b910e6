"""A neighbour's ingress traffic must never reopen replay of the victim's deliveries.

A route with a `dedupHeader` refuses (409) a delivery id it has seen within the route's tolerance
window: the `ReplayGuard` (plugbox/api/ingress.py) remembers the ids. Its memory is bounded
(`ingress_dedup_max_entries`) and was one LRU for every plugin's routes: the author of a hostile
plugin, who holds that plugin's webhook secret and may post to its public route as often as they
like, sent `ingress_dedup_max_entries` fresh ids to their own route and so pushed the victim's ids
out. A captured delivery of the victim, replayed within its timestamp window, then reached the
victim's handler a second time (measured before the fix: the replay answered 200 and the victim's
handler ran twice for one delivery).

Real confined workers, through the HTTP API. Asserts: the replay was refused before the flood
(the guard works), every flood request reached the attacker's handler (the attack ran), the replay
after the flood is still refused and the victim's handler ran once; the attacker's own oldest ids
are the ones forgotten (its flood cost it its own memory).
"""

from __future__ import annotations

import sys
import time

import httpx
import pytest

from plugbox.host import Host
from plugbox.lifecycle import Status

from .conftest import Attack, enable

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(180)]

GUARD = 40  # ingress_dedup_max_entries: ids the host remembers
FLOOD = GUARD + 10  # fresh ids the attacker's author sends to its own route
SIG = {"scheme": "shared-secret", "header": "X-Token", "dedupHeader": "X-Id", "timestampHeader": "X-Ts"}
ROUTE = [{"route": "in", "signature": SIG}]
SCHEMA = {"type": "object", "properties": {"webhookSecret": {"type": "string", "secret": True}}}

COUNTS = """
from plugbox.sdk import Plugin


class Counts(Plugin):
    def on_load(self, ctx):
        self.seen = 0
        ctx.register_webhook("in", self.answer)

    async def answer(self, request):
        self.seen += 1
        return {"status": 200, "body": {"seen": self.seen}}
"""


def _headers(secret: str, delivery_id: str) -> dict[str, str]:
    return {"X-Token": secret, "X-Id": delivery_id, "X-Ts": str(int(time.time())),
            "Content-Type": "application/json"}


@pytest.mark.parametrize("settings_overrides", [{"ingress_dedup_max_entries": GUARD}])
async def test_a_neighbours_flood_of_delivery_ids_does_not_reopen_replay_of_the_victims(
        host: Host, attack: Attack, client: httpx.AsyncClient) -> None:
    for plugin in ("victim", "attacker"):
        entry = await enable(host, attack.write_plugin(COUNTS, id=plugin, permissions=["webhook:ingress"],
                                                       configSchema=SCHEMA, ingress=ROUTE))
        assert entry.status == Status.ENABLED, entry.error
        await host.set_config(plugin, {"webhookSecret": f"{plugin}-secret"})
    captured = _headers("victim-secret", "v-1")  # the victim's sender's delivery, as a replayer captured it
    first = await client.post("/api/ingress/victim/default/in", content=b"{}", headers=captured)
    assert first.status_code == 200 and first.json() == {"seen": 1}, first.text
    before = await client.post("/api/ingress/victim/default/in", content=b"{}", headers=captured)
    assert before.status_code == 409, before.text  # the guard works

    # The attacker's author posts fresh ids to its own route, with its own secret.
    for n in range(FLOOD):
        r = await client.post("/api/ingress/attacker/default/in", content=b"{}",
                              headers=_headers("attacker-secret", f"a-{n}"))
        assert r.status_code == 200 and r.json() == {"seen": n + 1}, r.text  # the flood ran

    replay = await client.post("/api/ingress/victim/default/in", content=b"{}", headers=captured)
    print(f"\nreplay of the victim's delivery after {FLOOD} of the attacker's ids (guard {GUARD}): "
          f"{replay.status_code} {replay.text}")
    assert replay.status_code == 409, f"the victim's delivery was accepted again: {replay.text}"
    # The flood cost the attacker its own oldest ids: a replay of its first is let through.
    again = await client.post("/api/ingress/attacker/default/in", content=b"{}",
                              headers=_headers("attacker-secret", "a-0"))
    assert again.status_code == 200, again.text
    await attack.aftermath()
