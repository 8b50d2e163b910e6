"""Noisy neighbours in the host's `dedupOn` memory (`ingress_dedup_keys_total`): the routes of several
hostile plugins are flooded with unique dedup keys, each flood within the plugin's own
`ingress_dedup_keys_per_plugin`, while a victim's route is sent a few keys of its own.

Real confined workers, through the HTTP API. Asserts: every flood ran (each hostile handler
answered every request); the host never held more keys than the total; the victim's keys, within
its share, were never evicted (a repeat of each is still answered as a duplicate and its handler ran
once per key); the keys evicted were the hostile plugins' only, by reason `total`, and a repeat of
a hostile plugin's oldest key now reaches its handler again (the flood cost the flooder its own
memory); the counts are exposed as metrics; the host survived (`aftermath`).
"""

from __future__ import annotations

import sys

import httpx
import pytest

from plugbox.host import Host
from plugbox.lifecycle import Status

from .conftest import Attack, enable

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(180)]

PER_PLUGIN = 60
TOTAL = 120  # four plugins holding keys (the victim and three hostile): a share of 30 each
HOSTILE = ("hostile1", "hostile2", "hostile3")
FLOOD = 50  # unique keys sent to each hostile route: past its share, within its own bound
ROUTE = [{"route": "in", "signature": {"scheme": "none"}, "dedupOn": "header:X-Event"}]
ADMIN = {"X-API-Key": "k"}

ANSWERS = """
from plugbox.sdk import Plugin


class Answers(Plugin):
    def on_load(self, ctx):
        self.seen = 0
        ctx.register_webhook("in", self.answer)

    async def answer(self, request):
        self.seen += 1
        return {"status": 200, "body": {"seen": self.seen}}
"""


async def _send(client: httpx.AsyncClient, plugin: str, event: str) -> httpx.Response:
    r = await client.post(f"/api/ingress/{plugin}/default/in", content=b"{}", headers={"X-Event": event})
    assert r.status_code == 200, r.text
    return r


def _duplicate(r: httpx.Response) -> bool:
    return bool(r.json() == {"status": "duplicate"})


@pytest.mark.parametrize("settings_overrides", [{
    "allow_unsigned_ingress": True, "admin_api_keys": ("k",),
    "ingress_dedup_keys_per_plugin": PER_PLUGIN, "ingress_dedup_keys_total": TOTAL}])
async def test_flooded_routes_pay_for_the_dedup_total_and_a_quiet_plugins_keys_are_kept(
        host: Host, attack: Attack, client: httpx.AsyncClient) -> None:
    for plugin in ("victim", *HOSTILE):
        entry = await enable(host, attack.write_plugin(ANSWERS, id=plugin, permissions=["webhook:ingress"],
                                                       ingress=ROUTE))
        assert entry.status == Status.ENABLED, entry.error
    victim_keys = [f"v{n}" for n in range(10)]
    for event in victim_keys[:5]:  # before the flood
        assert not _duplicate(await _send(client, "victim", event))
    handled = dict.fromkeys(HOSTILE, 0)
    for n in range(FLOOD):
        for plugin in HOSTILE:
            r = await _send(client, plugin, f"{plugin}-{n}")
            assert not _duplicate(r)
            handled[plugin] = r.json()["seen"]  # its handler answered: the flood ran
            assert sum(host.ingress.dedup_keys_held().values()) <= TOTAL
        if n == FLOOD // 2:
            for event in victim_keys[5:]:  # during the flood
                assert not _duplicate(await _send(client, "victim", event))
    assert handled == dict.fromkeys(HOSTILE, FLOOD)
    held = host.ingress.dedup_keys_held()
    assert sum(held.values()) == TOTAL and held["victim"] == len(victim_keys)
    # The victim, within its share, lost no key: every repeat is recognised, its handler ran once per key.
    repeats = [await _send(client, "victim", event) for event in victim_keys]
    assert all(_duplicate(r) for r in repeats)
    first_again = await _send(client, "victim", "v-new")
    assert first_again.json() == {"seen": len(victim_keys) + 1}
    # Only the flooders paid, for the host's total; the oldest key of each is forgotten.
    evicted = host.ingress.dedup_evictions
    assert set(evicted) == {(plugin, "total") for plugin in HOSTILE}
    for plugin in HOSTILE:
        assert not _duplicate(await _send(client, plugin, f"{plugin}-0"))
    text = (await client.get("/metrics", headers=ADMIN)).text
    assert 'plugbox_ingress_dedup_keys{plugin="victim"} 11.0' in text
    assert 'plugbox_ingress_dedup_evictions_total{plugin="hostile1",reason="total"}' in text
    assert "victim" not in "".join(line for line in text.splitlines() if "dedup_evictions_total{" in line)
    await attack.aftermath()
