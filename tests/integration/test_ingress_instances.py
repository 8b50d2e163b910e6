"""Ingress instances an operator creates (`/api/plugins/{id}/ingress/instances`), end to end into a
real confined worker: an instance's path verifies with ITS secret and no other, its secrets never
come back from the API, deleting it makes its path 404 like an unknown one, writes need an admin key,
the per-plugin bound is enforced, and instances outlive a host restart."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugbox.api import create_app
from plugbox.api.ingress import sign
from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.lifecycle.entry import PluginEntry
from tests.integration.conftest import SESSION, WritePlugin, enable, host_settings

ADMIN = {"X-API-Key": "admin-key"}
READER = {"X-API-Key": "read-key"}
BASE_SECRET = "base-secret-for-default"
ACME_SECRET = "acme-secret-0123456789"
GLOBEX_SECRET = "globex-secret-9876543210"
BODY = b'{"event": "ping"}'

CODE = """
from plugbox.sdk import Plugin

class W(Plugin):
    async def on_load(self, ctx):
        ctx.register_webhook("hook", self.handle)

    async def handle(self, request):
        return {"status": 200, "body": {"instanceId": request["instanceId"], "sessionId": request["sessionId"]}}
"""
SCHEMA = {"type": "object", "properties": {"webhookSecret": {"type": "string", "secret": True},
                                           "verifyToken": {"type": "string", "secret": True}}}
ROUTES = [{"route": "hook",
           "signature": {"scheme": "hmac-sha256", "header": "X-Signature", "prefix": "sha256=",
                         "timestampHeader": "X-Timestamp"},
           "challenge": {"echoParam": "hub.challenge", "tokenParam": "hub.verify_token"}}]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"admin_api_keys": ("admin-key",), "api_keys": ("read-key",), "ingress_instances_per_plugin": 3}


@pytest.fixture
async def client(host: Host) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(host)), base_url="http://t") as c:
        yield c


async def _plugin(host: Host, write_plugin: WritePlugin) -> PluginEntry:
    entry = await enable(host, write_plugin(CODE, id="w", permissions=["webhook:ingress"], configSchema=SCHEMA,
                                            ingress=ROUTES))
    await host.set_config("w", {"webhookSecret": BASE_SECRET})
    return entry


def _signed(entry: PluginEntry, secret: str, body: bytes = BODY) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {"X-Signature": sign(entry.manifest.ingress[0].signature, secret, body, timestamp=stamp),
            "X-Timestamp": stamp, "Content-Type": "application/json"}


async def _create(client: httpx.AsyncClient, doc: dict[str, Any], headers: dict[str, str] = ADMIN) -> httpx.Response:
    return await client.post("/api/plugins/w/ingress/instances", json=doc, headers=headers)


async def test_a_delivery_to_an_instance_verifies_with_its_own_secret_only(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    entry = await _plugin(host, write_plugin)
    r = await _create(client, {"id": "acme", "sessionId": SESSION, "secrets": {"webhookSecret": ACME_SECRET}})
    assert r.status_code == 201, r.text
    assert r.json()["routes"] == {"hook": "/api/ingress/w/acme/hook"}
    assert (await _create(client, {"id": "globex", "secrets": {"webhookSecret": GLOBEX_SECRET}})).status_code == 201

    ok = await client.post("/api/ingress/w/acme/hook", content=BODY, headers=_signed(entry, ACME_SECRET))
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"instanceId": "acme", "sessionId": SESSION}  # the instance's bound session
    for other in (GLOBEX_SECRET, BASE_SECRET):  # another instance's secret, and the base config's
        refused = await client.post("/api/ingress/w/acme/hook", content=BODY, headers=_signed(entry, other))
        assert refused.status_code == 401 and refused.json()["error"] == "signature does not match"
    # ...and the base config still verifies `default` with its own secret, not an instance's.
    assert (await client.post("/api/ingress/w/default/hook", content=BODY,
                              headers=_signed(entry, BASE_SECRET))).status_code == 200
    assert (await client.post("/api/ingress/w/default/hook", content=BODY,
                              headers=_signed(entry, ACME_SECRET))).status_code == 401


async def test_an_instance_without_the_token_a_challenge_reads_is_not_answered_with_the_base_token(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    await host.set_config("w", {"webhookSecret": BASE_SECRET, "verifyToken": "base-token"})
    await _create(client, {"id": "acme", "secrets": {"webhookSecret": ACME_SECRET}})
    await _create(client, {"id": "tok", "secrets": {"webhookSecret": ACME_SECRET, "verifyToken": "tok-token"}})
    query = {"hub.challenge": "echo-me"}
    r = await client.get("/api/ingress/w/acme/hook", params={**query, "hub.verify_token": "base-token"})
    assert r.status_code == 503  # no token set on this instance: nothing to compare against
    r = await client.get("/api/ingress/w/tok/hook", params={**query, "hub.verify_token": "base-token"})
    assert r.status_code == 403
    r = await client.get("/api/ingress/w/tok/hook", params={**query, "hub.verify_token": "tok-token"})
    assert r.status_code == 200 and r.text == "echo-me"


async def test_secrets_are_never_returned(client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    created = await _create(client, {"id": "acme", "secrets": {"webhookSecret": ACME_SECRET}, "description": "Acme"})
    listed = await client.get("/api/plugins/w/ingress/instances", headers=READER)
    one = await client.get("/api/plugins/w/ingress/instances/acme", headers=READER)
    for r in (created, listed, one):
        assert r.status_code in (200, 201), r.text
        assert ACME_SECRET not in r.text
    assert one.json()["secrets"] == {"webhookSecret": "********"}
    assert [i["id"] for i in listed.json()["instances"]] == ["acme"]


async def test_a_deleted_instance_answers_404_like_an_unknown_one(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    entry = await _plugin(host, write_plugin)
    await _create(client, {"id": "gone", "secrets": {"webhookSecret": ACME_SECRET}})
    assert (await client.post("/api/ingress/w/gone/hook", content=BODY,
                              headers=_signed(entry, ACME_SECRET))).status_code == 200
    assert (await client.delete("/api/plugins/w/ingress/instances/gone", headers=ADMIN)).status_code == 204
    after = await client.post("/api/ingress/w/gone/hook", content=BODY, headers=_signed(entry, ACME_SECRET))
    never = await client.post("/api/ingress/w/never/hook", content=BODY, headers=_signed(entry, ACME_SECRET))
    assert (after.status_code, never.status_code) == (404, 404)
    assert after.json()["error"] == never.json()["error"].replace("never", "gone")
    assert (await client.get("/api/plugins/w/ingress/instances/gone", headers=READER)).status_code == 404
    assert (await client.delete("/api/plugins/w/ingress/instances/gone", headers=ADMIN)).status_code == 404


async def test_writes_need_an_admin_key(client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    doc = {"id": "acme", "secrets": {"webhookSecret": ACME_SECRET}}
    assert (await _create(client, doc, headers={})).status_code == 401
    assert (await _create(client, doc, headers=READER)).status_code == 403
    assert host.ingress_instances.list("w") == []  # the refused writes stored nothing
    assert (await _create(client, doc)).status_code == 201
    assert (await client.delete("/api/plugins/w/ingress/instances/acme", headers=READER)).status_code == 403
    assert (await client.get("/api/plugins/w/ingress/instances", headers={})).status_code == 401
    assert host.ingress_instances.get("w", "acme") is not None


async def test_the_bound_per_plugin_is_enforced_with_a_clear_error(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    for n in range(3):
        assert (await _create(client, {"id": f"i{n}", "secrets": {"webhookSecret": ACME_SECRET}})).status_code == 201
    r = await _create(client, {"id": "i3", "secrets": {"webhookSecret": ACME_SECRET}})
    assert r.status_code == 409
    assert "ingress_instances_per_plugin (3)" in r.json()["error"]
    assert len(host.ingress_instances.list("w")) == 3
    await client.delete("/api/plugins/w/ingress/instances/i0", headers=ADMIN)
    assert (await _create(client, {"id": "i3", "secrets": {"webhookSecret": ACME_SECRET}})).status_code == 201


@pytest.mark.parametrize(("doc", "field"), [
    ({"id": "default", "secrets": {"webhookSecret": "s"}}, "id"),
    ({"id": "../x", "secrets": {"webhookSecret": "s"}}, "id"),
    ({"id": "a", "secrets": {}}, "secrets"),
    ({"id": "a"}, "secrets"),
    ({"id": "a", "secrets": {"apiToken": "s"}}, "secrets.apiToken"),
    ({"id": "a", "secrets": {"webhookSecret": ""}}, "secrets.webhookSecret"),
    ({"id": "a", "secrets": {"webhookSecret": "x\n"}}, "secrets.webhookSecret"),
    ({"id": "a", "secrets": {"webhookSecret": "s"}, "url": "x"}, "url"),
])
async def test_a_bad_create_request_names_the_field(client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin,
                                                    doc: dict[str, Any], field: str) -> None:
    await _plugin(host, write_plugin)
    r = await _create(client, doc)
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert host.ingress_instances.list("w") == []


async def test_a_taken_id_is_refused_and_keeps_the_first_secret(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    entry = await _plugin(host, write_plugin)
    await _create(client, {"id": "acme", "secrets": {"webhookSecret": ACME_SECRET}})
    r = await _create(client, {"id": "acme", "secrets": {"webhookSecret": GLOBEX_SECRET}})
    assert r.status_code == 409 and "already has an ingress instance 'acme'" in r.json()["error"]
    assert (await client.post("/api/ingress/w/acme/hook", content=BODY,
                              headers=_signed(entry, ACME_SECRET))).status_code == 200


async def test_an_instance_id_is_generated_when_none_is_given(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    entry = await _plugin(host, write_plugin)
    r = await _create(client, {"secrets": {"webhookSecret": ACME_SECRET}})
    path = r.json()["routes"]["hook"]
    assert r.json()["id"].startswith("inst-") and path.endswith(f"/{r.json()['id']}/hook")
    assert (await client.post(path, content=BODY, headers=_signed(entry, ACME_SECRET))).status_code == 200


async def test_instances_survive_a_restart_and_go_with_the_plugin(tmp_path: Path, write_plugin: WritePlugin) -> None:
    plugin_dir = write_plugin(CODE, id="w", permissions=["webhook:ingress"], configSchema=SCHEMA, ingress=ROUTES)
    settings = host_settings(tmp_path, admin_api_keys=("admin-key",))
    first = Host(settings, engine=LoopbackEngine(), bundled=False)
    await first.start(restore=False)
    try:
        first.load_plugin(plugin_dir)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(first)), base_url="http://t") as c:
            assert (await _create(c, {"id": "acme", "secrets": {"webhookSecret": ACME_SECRET}})).status_code == 201
    finally:
        await first.stop()

    second = Host(settings, engine=LoopbackEngine(), bundled=False)
    await second.start(restore=False)
    try:
        await second.engine.create_session(SESSION)  # type: ignore[attr-defined]
        entry = await enable(second, plugin_dir)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(second)), base_url="http://t") as c:
            r = await c.post("/api/ingress/w/acme/hook", content=BODY, headers=_signed(entry, ACME_SECRET))
            assert r.status_code == 200 and r.json()["instanceId"] == "acme"
        await second.uninstall("w")
        assert second.ingress_instances.list("w") == []
    finally:
        await second.stop()


ALIVE_ROUTES = [{"route": "hook", "response": {"preflight": ["session-alive"]},
                 "signature": {"scheme": "hmac-sha256", "header": "X-Signature", "timestampHeader": "X-Timestamp"}}]


async def test_session_alive_preflight_refuses_a_gone_session_before_the_plugin_runs(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    entry = await enable(host, write_plugin(CODE, id="w", permissions=["webhook:ingress"], configSchema=SCHEMA,
                                            ingress=ALIVE_ROUTES))
    await host.set_config("w", {"webhookSecret": BASE_SECRET})
    await _create(client, {"id": "acme", "sessionId": SESSION, "secrets": {"webhookSecret": ACME_SECRET}})
    await _create(client, {"id": "ghost", "sessionId": "never-created", "secrets": {"webhookSecret": ACME_SECRET}})
    engine = host.engine
    assert isinstance(engine, LoopbackEngine)

    assert (await client.post("/api/ingress/w/acme/hook", content=BODY,
                              headers=_signed(entry, ACME_SECRET))).status_code == 200
    await engine.stop_session(SESSION)  # reconnecting is not gone: the delivery still reaches the plugin
    assert (await client.post("/api/ingress/w/acme/hook", content=BODY,
                              headers=_signed(entry, ACME_SECRET))).status_code == 200
    await engine.fail_session(SESSION)
    for path in ("/api/ingress/w/acme/hook", "/api/ingress/w/ghost/hook"):
        r = await client.post(path, content=BODY, headers=_signed(entry, ACME_SECRET))
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert "is not available" in r.json()["error"]
    # Checked only after the signature: an unsigned caller cannot use it to probe session liveness.
    r = await client.post("/api/ingress/w/acme/hook", content=BODY, headers=_signed(entry, GLOBEX_SECRET))
    assert r.status_code == 401
    # `default` is bound to no session: nothing to check.
    assert (await client.post("/api/ingress/w/default/hook", content=BODY,
                              headers=_signed(entry, BASE_SECRET))).status_code == 200
    await engine.start_session(SESSION)
    assert (await client.post("/api/ingress/w/acme/hook", content=BODY,
                              headers=_signed(entry, ACME_SECRET))).status_code == 200


async def test_a_rotated_secret_verifies_from_the_next_request_and_the_old_one_no_longer(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    entry = await _plugin(host, write_plugin)
    await _create(client, {"id": "acme", "secrets": {"webhookSecret": ACME_SECRET, "verifyToken": "tok"},
                           "description": "Acme"})
    path = "/api/plugins/w/ingress/instances/acme"
    assert (await client.patch(path, json={"secrets": {"webhookSecret": GLOBEX_SECRET}},
                               headers=READER)).status_code == 403
    r = await client.patch(path, json={"secrets": {"webhookSecret": GLOBEX_SECRET, "verifyToken": "********"}},
                           headers=ADMIN)
    assert r.status_code == 200 and GLOBEX_SECRET not in r.text, r.text
    assert r.json()["secrets"] == {"verifyToken": "********", "webhookSecret": "********"}
    assert r.json()["description"] == "Acme"  # not sent: kept
    old = await client.post("/api/ingress/w/acme/hook", content=BODY, headers=_signed(entry, ACME_SECRET))
    new = await client.post("/api/ingress/w/acme/hook", content=BODY, headers=_signed(entry, GLOBEX_SECRET))
    assert (old.status_code, new.status_code) == (401, 200)
    stored = host.ingress_instances.get("w", "acme")
    assert stored is not None and stored.secrets == {"webhookSecret": GLOBEX_SECRET, "verifyToken": "tok"}

    r = await client.patch(path, json={"secrets": {"verifyToken": None}, "sessionId": SESSION}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["secrets"] == {"webhookSecret": "********"}
    assert r.json()["sessionId"] == SESSION
    r = await client.patch(path, json={"secrets": {"webhookSecret": None}}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["field"] == "secrets"  # the last secret stays
    r = await client.patch(path, json={"id": "other"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["field"] == "id"
    assert (await client.patch("/api/plugins/w/ingress/instances/none", json={}, headers=ADMIN)).status_code == 404


async def test_the_mask_is_never_stored_as_a_secret(client: httpx.AsyncClient, host: Host,
                                                    write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    r = await _create(client, {"id": "acme", "secrets": {"webhookSecret": "********"}})
    assert r.status_code == 422 and r.json()["field"] == "secrets.webhookSecret"
    await _create(client, {"id": "acme", "secrets": {"webhookSecret": ACME_SECRET}})
    r = await client.patch("/api/plugins/w/ingress/instances/acme", json={"secrets": {"verifyToken": "********"}},
                           headers=ADMIN)
    assert r.status_code == 422 and r.json()["field"] == "secrets.verifyToken"
