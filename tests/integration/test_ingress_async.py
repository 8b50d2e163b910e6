"""Ingress v2 end to end, into a real confined worker: OpenWA's `/api/ingress/{plugin}/{instance}/{route}`,
async routes (202 at once, durable queue, retries, dead-letter list, replay), `dedupOn`, the `challenge`
handshake, instances with their own secret, and the queue bounds charged to the flooded plugin."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from plugbox.api import create_app
from plugbox.errors import StorageError
from plugbox.host import Host
from tests.integration.conftest import SESSION, WritePlugin, enable

SECRET = "hook-secret"
TOKEN = "verify-me"
HEADERS = {"X-Token": SECRET, "Content-Type": "application/json"}
ADMIN = {"X-API-Key": "k"}

CODE = """
import asyncio, uuid
from plugbox.sdk import CapabilityError, Plugin

class Q(Plugin):
    async def on_load(self, ctx):
        for route in ("slow", "dedup", "sdedup", "flaky", "hs", "a", "b"):
            try:
                ctx.register_webhook(route, self.handle)
            except CapabilityError:
                pass  # not declared in this manifest
        ctx.register_hook("ingress:error", self.on_error)

    async def on_error(self, hook):
        await self.ctx.storage.set(f"error:{hook.data.get('deliveryId')}:{hook.data.get('attempt')}", hook.data)

    async def handle(self, request):
        delay = self.ctx.config.get("delayMs", 0)
        if delay:
            await asyncio.sleep(delay / 1000)
        if not self.ctx.config.get("healthy", True):
            return {"status": 503, "body": "not now"}
        key = f"done:{request.get('deliveryId') or 'sync'}:{uuid.uuid4().hex}"
        await self.ctx.storage.set(key, {"attempt": request.get("attempt"), "instance": request["instanceId"],
                                         "session": request["sessionId"], "json": request.get("json")})
        return {"status": 200, "body": "ok"}
"""

SCHEMA = {"type": "object", "properties": {
    "webhookSecret": {"type": "string", "secret": True}, "verifyToken": {"type": "string", "secret": True},
    "delayMs": {"type": "number"}, "healthy": {"type": "boolean"}}}
SIG = {"scheme": "shared-secret", "header": "X-Token"}
ROUTES = [
    {"route": "slow", "mode": "async", "signature": SIG},
    {"route": "dedup", "mode": "async", "signature": SIG, "dedupOn": "field:event.id"},
    {"route": "sdedup", "signature": SIG, "dedupOn": "header:X-Request-Id"},
    {"route": "flaky", "mode": "async", "signature": SIG},
    {"route": "hs", "signature": SIG, "challenge": {"echoParam": "hub.challenge", "tokenParam": "hub.verify_token"}},
]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"admin_api_keys": ("k",), "ingress_backoff_initial_ms": 50, "ingress_backoff_max_ms": 200,
            "ingress_max_attempts": 3, "ingress_max_in_flight": 16, "ingress_max_in_flight_per_plugin": 10}


@pytest.fixture
async def client(host: Host) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(host)), base_url="http://t") as c:
        yield c


async def _plugin(host: Host, write_plugin: WritePlugin, id: str = "q", routes: list[dict[str, Any]] = ROUTES,
                  **config: Any) -> None:
    await enable(host, write_plugin(CODE, id=id, permissions=["webhook:ingress", "storage:use"],
                                    configSchema=SCHEMA, ingress=routes))
    await host.set_config(id, {"webhookSecret": SECRET, "verifyToken": TOKEN, **config})


def _done(host: Host, plugin: str = "q") -> Counter[str]:
    """Completed handler runs per delivery id, read from the plugin's own storage."""
    rows = host.db.read(lambda c: c.execute("SELECT key FROM plugin_kv WHERE plugin_id = ? AND key LIKE 'done:%'",
                                            (plugin,)).fetchall())
    return Counter(str(key).split(":")[1] for (key,) in rows)


async def _until(predicate: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _metric(client: httpx.AsyncClient, plugin: str, outcome: str) -> float:
    text = (await client.get("/metrics", headers=ADMIN)).text
    line = f'plugbox_ingress_requests_total{{outcome="{outcome}",plugin="{plugin}"}}'
    return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))


async def test_async_route_answers_202_at_once_while_the_plugin_takes_2_s(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin, delayMs=2000)
    latencies, ids = [], []
    for n in range(20):
        started = time.perf_counter()
        r = await client.post("/api/ingress/q/default/slow", content=json.dumps({"n": n}), headers=HEADERS)
        latencies.append(time.perf_counter() - started)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued"
        ids.append(r.json()["id"])
    p50 = statistics.median(latencies)
    print(f"async ingress 202: p50 {p50 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms (handler 2000 ms)")
    assert p50 < 0.050
    assert not _done(host)  # nothing was delivered inline: the sender did not wait for the plugin
    await _until(lambda: len(host.ingress.deliveries("q", state="delivered")) == 20)
    assert _done(host) == Counter({i: 1 for i in ids})
    listed = (await client.get("/api/plugins/q/ingress/deliveries", params={"state": "delivered"},
                               headers=ADMIN)).json()["deliveries"]
    assert {d["id"] for d in listed} == set(ids)
    assert {d["attempts"] for d in listed} == {1}


async def test_dedup_on_a_body_field_acknowledges_the_repeat_and_delivers_once(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    body = json.dumps({"event": {"id": "evt-1"}, "text": "hi"})
    first = await client.post("/api/ingress/q/default/dedup", content=body, headers=HEADERS)
    again = await client.post("/api/ingress/q/default/dedup", content=body.replace("hi", "hi again"), headers=HEADERS)
    other = await client.post("/api/ingress/q/default/dedup", content=json.dumps({"event": {"id": "evt-2"}}),
                              headers=HEADERS)
    missing = await client.post("/api/ingress/q/default/dedup", content="{}", headers=HEADERS)
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json() == {"id": first.json()["id"], "status": "duplicate"}
    assert missing.status_code == 400 and "event.id" in missing.json()["error"]
    await _until(lambda: len(_done(host)) == 2)
    await asyncio.sleep(0.3)  # a second delivery of evt-1 would have had time to arrive
    assert _done(host) == Counter({first.json()["id"]: 1, other.json()["id"]: 1})
    assert await _metric(client, "q", "duplicate") == 1


async def test_dedup_on_a_header_of_a_sync_route_runs_the_handler_once(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    headers = {**HEADERS, "X-Request-Id": "r-1"}
    first = await client.post("/ingress/q/sdedup", content="{}", headers=headers)
    again = await client.post("/api/ingress/q/default/sdedup", content="{}", headers=headers)
    assert (first.status_code, first.text) == (200, "ok")
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert _done(host) == Counter({"sync": 1})


async def test_a_sync_route_whose_dedup_key_cannot_be_claimed_answers_503_and_runs_nothing(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin, monkeypatch: pytest.MonkeyPatch) -> None:
    await _plugin(host, write_plugin)
    headers = {**HEADERS, "X-Request-Id": "r-1"}
    claim = host.ingress.claim

    async def database_down(*_args: Any) -> bool:
        raise StorageError("database is locked")

    monkeypatch.setattr(host.ingress, "claim", database_down)
    refused = await client.post("/api/ingress/q/default/sdedup", content="{}", headers=headers)
    assert refused.status_code == 503 and "dedup store is unavailable" in refused.json()["error"]
    assert _done(host) == Counter()
    monkeypatch.setattr(host.ingress, "claim", claim)
    retried = await client.post("/api/ingress/q/default/sdedup", content="{}", headers=headers)
    assert (retried.status_code, retried.text) == (200, "ok")  # the retry is no repeat: nothing was kept
    assert _done(host) == Counter({"sync": 1})


async def test_failing_deliveries_are_retried_then_dead_lettered_and_replay_delivers_them(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin, healthy=False)
    r = await client.post("/api/ingress/q/default/flaky", content=json.dumps({"order": 7}), headers=HEADERS)
    assert r.status_code == 202
    delivery_id = r.json()["id"]

    async def dead() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await client.get("/api/plugins/q/ingress/dead-letters",
                                                        headers=ADMIN)).json()["deliveries"]
        return found

    deadline = time.monotonic() + 30
    while not await dead():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    (letter,) = await dead()
    assert letter["id"] == delivery_id and letter["attempts"] == 3 and letter["lastStatus"] == 503
    assert letter["request"]["json"] == {"order": 7}
    assert not _done(host)
    found, error = host.storage.get("q", f"error:{delivery_id}:3")
    assert found and error["instanceId"] == "default" and error["status"] == 503

    assert (await client.post(f"/api/plugins/q/ingress/deliveries/{delivery_id}/replay")).status_code == 401
    await host.set_config("q", {"webhookSecret": SECRET, "healthy": True})
    replayed = await client.post(f"/api/plugins/q/ingress/deliveries/{delivery_id}/replay", headers=ADMIN)
    assert replayed.status_code == 202 and replayed.json()["state"] == "pending"
    await _until(lambda: bool(_done(host)))
    assert _done(host) == Counter({delivery_id: 1})
    again = await client.post(f"/api/plugins/q/ingress/deliveries/{delivery_id}/replay", headers=ADMIN)
    assert again.status_code == 409  # delivered now, not dead


async def test_challenge_answers_the_handshake_only_with_the_verify_token(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    ok = await client.get("/api/ingress/q/default/hs",
                          params={"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "1158201444"})
    assert (ok.status_code, ok.text) == (200, "1158201444")
    assert ok.headers["content-type"].startswith("text/plain") and "sandbox" in ok.headers["content-security-policy"]
    wrong = await client.get("/api/ingress/q/default/hs", params={"hub.verify_token": "guess", "hub.challenge": "x"})
    assert wrong.status_code == 403
    html = await client.get("/api/ingress/q/default/hs", params={"hub.verify_token": TOKEN,
                                                                "hub.challenge": "<script>\n"})
    assert html.status_code == 400
    no_challenge = await client.get("/api/ingress/q/default/slow", params={"hub.verify_token": TOKEN})
    assert no_challenge.status_code == 405
    assert _done(host) == Counter()  # the handshake never reached the plugin


async def test_a_session_instance_verifies_with_its_own_secret(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    await host.set_session_config("q", SESSION, {"webhookSecret": "session-secret"})
    own = {**HEADERS, "X-Token": "session-secret"}
    assert (await client.post(f"/api/ingress/q/{SESSION}/sdedup", content="{}",
                              headers={**own, "X-Request-Id": "1"})).status_code == 200
    assert (await client.post(f"/api/ingress/q/{SESSION}/sdedup", content="{}",
                              headers={**HEADERS, "X-Request-Id": "2"})).status_code == 401
    assert (await client.post("/api/ingress/q/not-a-session/sdedup", content="{}",
                              headers={**HEADERS, "X-Request-Id": "3"})).status_code == 404
    rows = host.db.read(lambda c: c.execute("SELECT key FROM plugin_kv WHERE plugin_id = 'q' AND key LIKE 'done:%'")
                        .fetchall())
    (stored,) = [host.storage.get("q", key)[1] for (key,) in rows]
    assert (stored["instance"], stored["session"]) == (SESSION, SESSION)


class TestBounds:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"admin_api_keys": ("k",), "ingress_queue_max_per_plugin": 6, "ingress_queue_max_per_route": 4}

    async def test_a_flood_fills_only_the_flooded_plugins_queue(
            self, client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
        routes = [{"route": r, "mode": "async", "signature": SIG} for r in ("a", "b")]
        await _plugin(host, write_plugin, id="flood", routes=routes)
        await _plugin(host, write_plugin, id="calm", routes=routes)
        await host.disable("flood")  # its deliveries wait: nothing drains its queue

        def post(plugin: str, route: str) -> Any:
            return client.post(f"/api/ingress/{plugin}/default/{route}", content="{}", headers=HEADERS)

        on_a = [(await post("flood", "a")).status_code for _ in range(6)]
        on_b = [(await post("flood", "b")).status_code for _ in range(4)]
        assert on_a == [202] * 4 + [429] * 2  # the route's bound
        assert on_b == [202] * 2 + [429] * 2  # the plugin's bound (4 + 2)
        refused = await post("flood", "b")
        assert refused.headers["retry-after"] and "full" in refused.json()["error"]
        assert await _metric(client, "flood", "queue_full") == 5
        assert 'plugbox_ingress_queue_pending{plugin="flood"} 6.0' in (await client.get("/metrics", headers=ADMIN)).text

        calm = await post("calm", "a")
        assert calm.status_code == 202  # the neighbour is not charged for the flood
        await _until(lambda: _done(host, "calm") == Counter({calm.json()["id"]: 1}))
        assert await _metric(client, "calm", "queue_full") == 0
        assert not _done(host, "flood")

        await host.enable("flood")  # the queued deliveries were kept, and now go through
        await _until(lambda: len(_done(host, "flood")) == 6)

    @pytest.mark.parametrize("settings_overrides", [{"admin_api_keys": ("k",), "ingress_queue_max_bytes": 600}])
    async def test_floods_at_two_plugins_share_the_hosts_bytes_and_a_third_plugin_still_queues(
            self, client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
        routes = [{"route": "a", "mode": "async", "signature": SIG}]
        for plugin in ("flood1", "flood2", "calm"):
            await _plugin(host, write_plugin, id=plugin, routes=routes)
        await host.disable("flood1")  # nothing drains their queues: every delivery stays held
        await host.disable("flood2")

        def post(plugin: str) -> Any:
            return client.post(f"/api/ingress/{plugin}/default/a", content="x" * 100, headers=HEADERS)

        codes = {p: [(await post(p)).status_code for _ in range(6)] for p in ("flood1", "flood2")}
        assert all(429 in c for c in codes.values()), codes  # the host's bound, not each plugin's 6
        refused = await post("flood2")
        assert refused.status_code == 429 and "holds its share" in refused.json()["error"]
        calm = await post("calm")
        assert calm.status_code == 202  # below its share: queued, whoever filled the host
        assert await _metric(client, "calm", "queue_full") == 0

    async def test_a_flood_without_the_secret_queues_nothing(
            self, client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
        routes = [{"route": "a", "mode": "async", "signature": SIG}]
        await _plugin(host, write_plugin, id="flood", routes=routes)
        forged = {**HEADERS, "X-Token": "guess"}
        answers = Counter([(await client.post("/api/ingress/flood/default/a", content="{}", headers=forged))
                           .status_code for _ in range(200)])
        assert answers == Counter({401: 200})
        assert host.ingress.deliveries("flood") == [] and host.ingress.pending_counts() == {}
        assert await _metric(client, "flood", "bad_signature") == 200
        ok = await client.post("/api/ingress/flood/default/a", content="{}", headers=HEADERS)
        assert ok.status_code == 202  # the forged flood took no room from the real sender
