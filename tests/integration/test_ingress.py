"""`POST /ingress/{plugin}/{route}` end to end, into a real confined worker: each signature scheme
accepted when correct and refused when tampered, stale or replayed; unsigned only with the operator's
opt-in; undeclared routes 404 and counted; timeout → 504, crash → 502, disabled → 503."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugbox import payloads
from plugbox.api import create_app
from plugbox.api.ingress import sign
from plugbox.host import Host
from plugbox.lifecycle.entry import PluginEntry
from tests.integration.conftest import WritePlugin, enable

SECRET = "hook-secret"
WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()

CODE = """
import asyncio, os
from plugbox.sdk import CapabilityError, Plugin

class W(Plugin):
    async def on_load(self, ctx):
        for route in ("hmac", "shared", "std", "open"):
            try:
                ctx.register_webhook(route, self.handle)
            except CapabilityError:
                pass  # not declared in this manifest
        ctx.register_webhook("slow", self.slow)
        ctx.register_webhook("crash", self.crash)
        ctx.register_hook("ingress:error", self.on_error)

    async def on_error(self, hook):
        await self.ctx.storage.set("last_error", hook.data)

    async def handle(self, request):
        return {"status": 202, "body": {"json": request.get("json"), "method": request["method"],
                "query": request["query"], "path": request["path"]}, "headers": {"X-Plugin": "yes"}}

    async def slow(self, request):
        await asyncio.sleep(60)

    def crash(self, request):
        os._exit(3)
"""

SCHEMA = {"type": "object", "properties": {"webhookSecret": {"type": "string", "secret": True},
                                           "whSecret": {"type": "string", "secret": True}}}
ROUTES = [
    {"route": "hmac", "signature": {"scheme": "hmac-sha256", "header": "X-Signature", "prefix": "sha256=",
                                    "timestampHeader": "X-Timestamp", "toleranceSec": 300,
                                    "dedupHeader": "X-Delivery"}},
    {"route": "shared", "signature": {"scheme": "shared-secret", "header": "X-Token"}},
    {"route": "std", "signature": {"scheme": "standard-webhooks", "secretField": "whSecret"}},
    {"route": "slow", "signature": {"scheme": "shared-secret", "header": "X-Token"}},
    {"route": "crash", "signature": {"scheme": "shared-secret", "header": "X-Token"}},
]
BODY = json.dumps({"event": "ping", "n": 1}).encode()


@pytest.fixture
async def client(host: Host) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(host)), base_url="http://t") as c:
        yield c


async def _plugin(host: Host, write_plugin: WritePlugin, routes: list[dict[str, Any]] = ROUTES) -> PluginEntry:
    entry = await enable(host, write_plugin(CODE, id="w", permissions=["webhook:ingress", "storage:use"],
                                            configSchema=SCHEMA,
                                            ingress=routes))
    await host.set_config("w", {"webhookSecret": SECRET, "whSecret": WHSEC})
    return entry


def _sig(entry: PluginEntry, route: str) -> Any:
    return next(r.signature for r in entry.manifest.ingress if r.route == route)


def _hmac_headers(entry: PluginEntry, body: bytes = BODY, ts: int | None = None,
                  delivery: str = "d1") -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    return {"X-Signature": sign(_sig(entry, "hmac"), SECRET, body, id=delivery, timestamp=stamp), "X-Timestamp": stamp,
            "X-Delivery": delivery, "Content-Type": "application/json"}


async def _metrics(client: httpx.AsyncClient) -> str:
    return (await client.get("/metrics", headers={"X-API-Key": "k"})).text


async def _metric(client: httpx.AsyncClient, outcome: str) -> float:
    text = await _metrics(client)
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(f'plugbox_ingress_requests_total{{outcome="{outcome}",plugin='))


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"admin_api_keys": ("k",), "hook_budget_ms": 600}


async def test_hmac_signed_request_reaches_the_handler(client: httpx.AsyncClient, host: Host,
                                                       write_plugin: WritePlugin) -> None:
    entry = await _plugin(host, write_plugin)
    r = await client.post("/ingress/w/hmac?x=1", content=BODY, headers=_hmac_headers(entry))
    assert r.status_code == 202, r.text
    assert r.json() == {"json": {"event": "ping", "n": 1}, "method": "POST", "query": {"x": "1"},
                        "path": "/ingress/w/hmac"}
    assert r.headers["x-plugin"] == "yes"
    assert await _metric(client, "ok") == 1
    assert 'plugbox_ingress_requests_total{outcome="ok",plugin="w"} 1.0' in await _metrics(client)


async def test_hmac_tampered_expired_and_replayed_are_refused(client: httpx.AsyncClient, host: Host,
                                                              write_plugin: WritePlugin) -> None:
    entry = await _plugin(host, write_plugin)
    r = await client.post("/ingress/w/hmac", content=BODY + b" ", headers=_hmac_headers(entry))
    assert r.status_code == 401 and r.json()["error"] == "signature does not match"
    stale = _hmac_headers(entry, ts=int(time.time()) - 3600, delivery="d-stale")
    r = await client.post("/ingress/w/hmac", content=BODY, headers=stale)
    assert r.status_code == 401 and "300 s" in r.json()["error"]
    good = _hmac_headers(entry, delivery="d-once")
    assert (await client.post("/ingress/w/hmac", content=BODY, headers=good)).status_code == 202
    r = await client.post("/ingress/w/hmac", content=BODY, headers=good)
    assert r.status_code == 409 and "already received" in r.json()["error"]
    assert await _metric(client, "replayed") == 1
    assert await _metric(client, "bad_signature") == 1


async def test_shared_secret_and_standard_webhooks(client: httpx.AsyncClient, host: Host,
                                                   write_plugin: WritePlugin) -> None:
    entry = await _plugin(host, write_plugin)
    assert (await client.post("/ingress/w/shared", content=b"x", headers={"X-Token": SECRET})).status_code == 202
    assert (await client.post("/ingress/w/shared", content=b"x", headers={"X-Token": "nope"})).status_code == 401
    assert (await client.post("/ingress/w/shared", content=b"x")).status_code == 401
    stamp = str(int(time.time()))
    headers = {"webhook-id": "msg_1", "webhook-timestamp": stamp,
               "webhook-signature": sign(_sig(entry, "std"), WHSEC, BODY, id="msg_1", timestamp=stamp)}
    assert (await client.post("/ingress/w/std", content=BODY, headers=headers)).status_code == 202
    assert (await client.post("/ingress/w/std", content=BODY, headers=headers)).status_code == 409
    forged = {**headers, "webhook-id": "msg_2"}
    assert (await client.post("/ingress/w/std", content=BODY, headers=forged)).status_code == 401


async def test_undeclared_routes_and_unknown_plugins_are_404_and_counted(client: httpx.AsyncClient, host: Host,
                                                                         write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    for path in ("/ingress/w/nope", "/ingress/ghost/hmac"):
        r = await client.post(path, content=b"{}")
        assert r.status_code == 404 and "no ingress route" in r.json()["error"]
    assert await _metric(client, "unknown_route") == 2


async def test_body_over_cap_is_413(client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    r = await client.post("/ingress/w/shared", content=b"x" * (host.settings.ingress_body_max_bytes + 1),
                          headers={"X-Token": SECRET})
    assert r.status_code == 413


async def test_handler_timeout_is_504(client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    r = await client.post("/ingress/w/slow", content=b"x", headers={"X-Token": SECRET})
    assert r.status_code == 504 and "did not answer" in r.json()["error"]
    # The plugin hears about its own failed delivery through ingress:error, and the chain is timed.
    async with asyncio.timeout(5):
        while not host.storage.get("w", "last_error")[0]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    error = host.storage.get("w", "last_error")[1]
    assert error["route"] == "slow" and error["status"] == 504 and error["pluginId"] == "w"
    assert payloads.problem("ingress:error", error) is None  # the event's documented payload
    assert 'plugbox_hook_chain_seconds_count{event="ingress:error"} 1.0' in await _metrics(client)


async def test_worker_crash_is_502_and_disabled_plugin_is_503(client: httpx.AsyncClient, host: Host,
                                                              write_plugin: WritePlugin) -> None:
    await _plugin(host, write_plugin)
    r = await client.post("/ingress/w/crash", content=b"x", headers={"X-Token": SECRET})
    assert r.status_code == 502 and "worker is gone" in r.json()["error"]
    async with asyncio.timeout(10):  # the death is reported once the zygote has reaped the worker
        while 'plugbox_worker_crashes_total{plugin="w"} 1.0' not in await _metrics(client):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await host.disable("w")
    r = await client.post("/ingress/w/shared", content=b"x", headers={"X-Token": SECRET})
    assert r.status_code == 503 and "not enabled" in r.json()["error"]
    assert 'plugbox_worker_restarts_total{plugin="w"} 1.0' in await _metrics(client)


async def test_missing_secret_is_503_not_accepted(client: httpx.AsyncClient, host: Host,
                                                  write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin(CODE, id="w", permissions=["webhook:ingress"], configSchema=SCHEMA,
                                    ingress=ROUTES))
    r = await client.post("/ingress/w/shared", content=b"x", headers={"X-Token": ""})
    assert r.status_code == 503 and "no webhook secret" in r.json()["error"]


OPEN = [{"route": "open", "signature": {"scheme": "none"}}, *ROUTES[3:]]


@pytest.mark.parametrize("settings_overrides", [{"admin_api_keys": ("k",), "allow_unsigned_ingress": True}])
async def test_unsigned_route_works_only_with_operator_opt_in(client: httpx.AsyncClient, host: Host,
                                                              write_plugin: WritePlugin, tmp_path: Path) -> None:
    await _plugin(host, write_plugin, OPEN)
    assert (await client.post("/ingress/w/open", content=b"{}")).status_code == 202
    from plugbox.errors import ManifestError
    from tests.integration.conftest import host_settings

    strict = Host(host_settings(tmp_path / "strict"), bundled=False)
    try:
        with pytest.raises(ManifestError, match="unsigned"):
            strict.load_plugin(host.manager.get("w").record.path and Path(host.manager.get("w").record.path))
    finally:
        await strict.stop()
