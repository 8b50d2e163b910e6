"""Outbound webhooks against a real HTTP receiver on 127.0.0.1 (SPEC §9): retries with backoff, the
dead-letter list and replay over the API, Standard Webhooks signatures, the `webhook:*` hooks, and
delivery through the `net.fetch` address guard. Backoff settings are milliseconds, so no test sleeps
for long; every wait polls for the state under test."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from plugbox.api import create_app
from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.permissions import PERMISSIONS
from plugbox.sdk import HookContext, HookResult, Plugin
from plugbox.webhooks import Delivery, parse_spec

from ..webhook_receiver import receiving
from .conftest import host_settings, wait_for

ADMIN = {"X-API-Key": "admin-key"}
READER = {"X-API-Key": "read-key"}
SESSION = "s1"
# The payloads work makes rewriting data or vetoing need `hooks:modify`; grant it where it exists.
MODIFY = ["hooks:modify"] if "hooks:modify" in PERMISSIONS else []


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    settings = host_settings(
        tmp_path, fetch_exempt_hosts=("127.0.0.1",), webhook_backoff_initial_ms=10, webhook_backoff_max_ms=40,
        webhook_max_attempts=4, api_keys=("read-key",), admin_api_keys=("admin-key",),
    )
    async with Host(settings, engine=LoopbackEngine(), bundled=False) as h:
        yield h


@pytest.fixture
async def client(host: Host) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(host))
    async with httpx.AsyncClient(transport=transport, base_url="http://plugbox") as c:
        yield c


async def _subscribe(host: Host, url: str, events: list[str] | None = None) -> str:
    sub = await host.webhooks.create(parse_spec({"url": url, "events": events or ["session:ready"]}).complete())
    return sub.id


def _only(host: Host, sub_id: str) -> Delivery:
    (delivery,) = host.webhooks.deliveries(subscription_id=sub_id)
    return delivery


def _settled(host: Host, sub_id: str, state: str) -> Callable[[], bool]:
    return lambda: [d.state for d in host.webhooks.deliveries(subscription_id=sub_id)] == [state]


async def _enable(host: Host, plugin: type[Plugin], plugin_id: str, permissions: list[str]) -> None:
    host.register_builtin(plugin, {"id": plugin_id, "name": plugin_id, "version": "1.0.0", "type": "extension",
                                   "main": "builtin", "permissions": permissions})
    await host.set_active_sessions(plugin_id, [SESSION])
    await host.enable(plugin_id)


# -- retries, dead letters, replay -----------------------------------------------------------------


async def test_receiver_failing_three_attempts_gets_the_delivery_on_the_fourth(host: Host) -> None:
    with receiving(lambda _id, nth: 500 if nth <= 3 else 200) as receiver:
        sub_id = await _subscribe(host, receiver.url)
        await host.dispatch("session:ready", {"sessionId": SESSION}, SESSION)
        await wait_for(_settled(host, sub_id, "delivered"))
    delivery = _only(host, sub_id)
    answers = [r.status for r in receiver.of(delivery.id)]
    assert answers == [500, 500, 500, 200]
    assert delivery.attempts == 4 and delivery.last_status == 200


async def test_every_attempt_is_signed_and_carries_the_envelope(host: Host) -> None:
    with receiving() as receiver:
        sub = await host.webhooks.create(parse_spec({"url": receiver.url, "events": ["*"]}).complete())
        await host.dispatch("session:ready", {"sessionId": SESSION}, SESSION)
        await wait_for(_settled(host, sub.id, "delivered"))
    (got,) = receiver.requests
    envelope = Webhook(sub.secret).verify(got.body, got.headers)  # raises unless the signature is right
    assert envelope["id"] == got.headers["webhook-id"] == _only(host, sub.id).id
    assert envelope["event"] == "session:ready" and envelope["sessionId"] == SESSION
    assert envelope["data"] == {"sessionId": SESSION} and "timestamp" in envelope
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 43 + "=").verify(got.body, got.headers)


async def test_always_failing_receiver_dead_letters_the_delivery_and_replay_delivers_it(
    host: Host, client: httpx.AsyncClient
) -> None:
    healthy = False
    with receiving(lambda _id, _nth: 200 if healthy else 503) as receiver:
        sub_id = await _subscribe(host, receiver.url)
        await host.dispatch("session:ready", {"sessionId": SESSION}, SESSION)
        await wait_for(_settled(host, sub_id, "dead"))
        dead = (await client.get("/api/webhooks/dead-letters", headers=ADMIN)).json()["deliveries"]
        assert [(d["subscriptionId"], d["attempts"], d["lastStatus"]) for d in dead] == [(sub_id, 4, 503)]
        assert "HTTP 503" in dead[0]["lastError"]
        healthy = True
        r = await client.post(f"/api/webhooks/deliveries/{dead[0]['id']}/replay", headers=ADMIN)
        assert r.status_code == 202 and r.json()["state"] == "pending"
        await wait_for(_settled(host, sub_id, "delivered"))
    assert [r.status for r in receiver.of(dead[0]["id"])] == [503, 503, 503, 503, 200]  # same id throughout
    assert (await client.get("/api/webhooks/dead-letters", headers=ADMIN)).json()["deliveries"] == []


async def test_replay_of_a_delivery_not_dead_is_a_conflict(host: Host, client: httpx.AsyncClient) -> None:
    with receiving() as receiver:
        sub_id = await _subscribe(host, receiver.url)
        await host.dispatch("session:ready", {}, SESSION)
        await wait_for(_settled(host, sub_id, "delivered"))
    delivered = _only(host, sub_id)
    assert (await client.post(f"/api/webhooks/deliveries/{delivered.id}/replay", headers=ADMIN)).status_code == 409
    assert (await client.post("/api/webhooks/deliveries/msg_nope/replay", headers=ADMIN)).status_code == 404


# -- the guard ---------------------------------------------------------------------------------------


async def test_a_loopback_receiver_is_refused_without_the_operator_exemption(tmp_path: Path) -> None:
    settings = host_settings(tmp_path, webhook_backoff_initial_ms=10, webhook_backoff_max_ms=20,
                             webhook_max_attempts=2)
    with receiving() as receiver:
        async with Host(settings, engine=LoopbackEngine(), bundled=False) as host:
            sub_id = await _subscribe(host, receiver.url)
            await host.dispatch("session:ready", {}, SESSION)
            await wait_for(_settled(host, sub_id, "dead"))
            delivery = _only(host, sub_id)
            await host.dispatch("session:ready", {}, SESSION)  # the host still serves
    assert receiver.requests == []  # refused before connecting
    assert delivery.last_error is not None and "is not public" in delivery.last_error


# -- hooks -------------------------------------------------------------------------------------------


async def test_webhook_before_stop_cancels_that_one_delivery(host: Host) -> None:
    with receiving() as kept_rx, receiving() as cancelled_rx:
        kept = await _subscribe(host, kept_rx.url)
        cancelled = await _subscribe(host, cancelled_rx.url)

        class Veto(Plugin):
            def on_load(self, ctx: Any) -> None:
                ctx.register_hook("webhook:before", self.before)

            def before(self, hook: HookContext) -> HookResult | None:
                return HookResult(stop=True) if hook.data["subscriptionId"] == cancelled else None

        await _enable(host, Veto, "veto", MODIFY)
        await host.dispatch("session:ready", {}, SESSION)
        await wait_for(_settled(host, kept, "delivered"))
    assert len(kept_rx.requests) == 1
    assert cancelled_rx.requests == [] and host.webhooks.deliveries(subscription_id=cancelled) == []


async def test_webhook_before_may_rewrite_the_payload_but_not_its_id(host: Host) -> None:
    with receiving() as receiver:
        sub = await host.webhooks.create(parse_spec({"url": receiver.url, "events": ["session:ready"]}).complete())

        class Rewrite(Plugin):
            def on_load(self, ctx: Any) -> None:
                ctx.register_hook("webhook:before", self.before)

            def before(self, hook: HookContext) -> HookResult:
                payload = {**hook.data["payload"], "id": "forged", "data": {"redacted": True}}
                return HookResult(data={**hook.data, "payload": payload})

        await _enable(host, Rewrite, "rewrite", MODIFY)
        await host.dispatch("session:ready", {"secret": "x"}, SESSION)
        await wait_for(_settled(host, sub.id, "delivered"))
    (got,) = receiver.requests
    envelope = Webhook(sub.secret).verify(got.body, got.headers)
    assert envelope["data"] == {"redacted": True}
    assert envelope["id"] == got.headers["webhook-id"] == _only(host, sub.id).id


async def test_queued_error_delivered_and_after_fire_in_order(host: Host) -> None:
    seen: list[tuple[str, Any]] = []

    class Watch(Plugin):
        def on_load(self, ctx: Any) -> None:
            for event in ("webhook:queued", "webhook:delivered", "webhook:error", "webhook:after"):
                ctx.register_hook(event, self.watch)

        def watch(self, hook: HookContext) -> None:
            seen.append((hook.event, hook.data.get("attempt")))

    await _enable(host, Watch, "watch", [])
    with receiving(lambda _id, nth: 500 if nth == 1 else 200) as receiver:
        sub_id = await _subscribe(host, receiver.url)
        await host.dispatch("session:ready", {}, SESSION)
        await wait_for(lambda: ("webhook:after", 2) in seen)
    assert seen == [("webhook:queued", None), ("webhook:error", 1), ("webhook:delivered", 2), ("webhook:after", 2)]
    assert _only(host, sub_id).state == "delivered"


async def test_message_events_reach_a_subscription_that_names_them(host: Host) -> None:
    await host.engine.create_session(SESSION)
    with receiving() as receiver:
        sub_id = await _subscribe(host, receiver.url, ["message:received", "message:sending", "message:sent"])
        await host.engine.inject_inbound(SESSION, "15550109999@c.us", "hello")
        await host.messages.send_text(SESSION, "15550109999@c.us", "hi back")
        await wait_for(lambda: [d.state for d in host.webhooks.deliveries(subscription_id=sub_id)] == ["delivered"] * 3)
    events = sorted(json.loads(r.body)["event"] for r in receiver.accepted())
    assert events == ["message:received", "message:sending", "message:sent"]
    sending = next(json.loads(r.body) for r in receiver.accepted() if json.loads(r.body)["event"] == "message:sending")
    assert sending["outcome"] == {"vetoed": False, "by": None}


# -- the API -----------------------------------------------------------------------------------------


async def test_subscription_crud_over_the_api_shows_the_secret_once(host: Host, client: httpx.AsyncClient) -> None:
    r = await client.post("/api/webhooks", headers=ADMIN, json={"url": "https://hooks.example.org/in",
                                                                 "events": ["message:received"]})
    assert r.status_code == 201 and r.json()["secret"].startswith("whsec_")
    sub_id = r.json()["id"]
    listed = (await client.get("/api/webhooks", headers=ADMIN)).json()["webhooks"]
    assert [w["id"] for w in listed] == [sub_id] and "secret" not in listed[0]
    r = await client.patch(f"/api/webhooks/{sub_id}", headers=ADMIN, json={"enabled": False, "events": ["*"]})
    assert r.status_code == 200 and (r.json()["enabled"], r.json()["events"]) == (False, ["*"])
    assert "secret" not in (await client.get(f"/api/webhooks/{sub_id}", headers=ADMIN)).json()
    assert (await client.delete(f"/api/webhooks/{sub_id}", headers=ADMIN)).status_code == 204
    assert (await client.get(f"/api/webhooks/{sub_id}", headers=ADMIN)).status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "ftp://x.example/", "events": ["*"]}, "url"),
    ({"url": "https://x.example/", "events": ["webhook:delivered"]}, "events"),
    ({"url": "https://x.example/", "events": ["no:such"]}, "events"),
    ({"url": "https://x.example/", "events": ["*"], "secret": "plain"}, "secret"),
    ({"events": ["*"]}, "url"),
    ({"url": "https://x.example/", "events": ["*"], "extra": 1}, "extra"),
])
async def test_a_bad_subscription_is_refused_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    r = await client.post("/api/webhooks", headers=ADMIN, json=body)
    assert r.status_code == 422 and r.json()["field"] == field
    assert (await client.get("/api/webhooks", headers=ADMIN)).json()["webhooks"] == []


async def test_webhook_routes_need_an_admin_key(client: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/api/webhooks"), ("GET", "/api/webhooks/dead-letters"),
                         ("GET", "/api/webhooks/deliveries"), ("POST", "/api/webhooks")):
        assert (await client.request(method, path, headers=READER)).status_code == 403, path
