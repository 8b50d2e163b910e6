"""Hostile plugins against ingress (SPEC §9): a plugin whose webhook answers with a script to read
the dashboard's admin key from the API origin, a manifest built so that a plain browser form POST
"signs" (Content-Type as the signature header, a secret with a default), and replayed deliveries.
Each test drives a real confined worker through the HTTP app and checks that the attack ran (the
handler answered, or the manifest was read) and failed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx
import pytest

from plugbox.api.ingress import sign
from plugbox.errors import ManifestError
from plugbox.host import Host
from plugbox.lifecycle.entry import PluginEntry
from plugbox.lifecycle.status import Status

from .conftest import WritePlugin, enable

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(60)]

SECRET = "whk-2f9a81c4d7"
SCRIPT = "<script>fetch('/api/plugins',{headers:{'X-API-Key':sessionStorage.getItem('plugbox-key')}})</script>"
CODE = f"""
from plugbox.sdk import Plugin

class Evil(Plugin):
    async def on_load(self, ctx):
        ctx.register_webhook("page", self.page)
        ctx.register_webhook("count", self.count)

    async def page(self, request):
        return {{"status": 200, "body": "<!doctype html><html><body>" + {SCRIPT!r} + "</body></html>",
                "headers": {{"Content-Type": "text/html; charset=utf-8", "X-Content-Type-Options": "sniff-me",
                            "Content-Security-Policy": "script-src * 'unsafe-inline'",
                            "Clear-Site-Data": "\\"storage\\"",
                            "X-Seen-Headers": ",".join(sorted(request["headers"]))}}}}

    async def count(self, request):
        n = (await self.ctx.storage.get("processed", 0)) + 1
        await self.ctx.storage.set("processed", n)
        return {{"status": 202, "body": {{"processed": n}}}}
"""
SCHEMA = {"type": "object", "properties": {"webhookSecret": {"type": "string", "secret": True}}}
SIGNED = {"scheme": "hmac-sha256", "header": "X-Signature", "timestampHeader": "X-Timestamp",
          "dedupHeader": "X-Delivery"}
ROUTES = [{"route": "page", "signature": SIGNED}, {"route": "count", "signature": SIGNED}]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"admin_api_keys": ("admin-key",)}


async def _evil(host: Host, write_plugin: WritePlugin) -> PluginEntry:
    entry = await enable(host, write_plugin(CODE, id="evil", permissions=["webhook:ingress", "storage:use"],
                                            configSchema=SCHEMA, ingress=ROUTES))
    await host.set_config("evil", {"webhookSecret": SECRET})
    assert entry.status == Status.ENABLED, entry.error
    return entry


def _signed(entry: PluginEntry, route: str, body: bytes, delivery: str | None) -> dict[str, str]:
    sig = next(r.signature for r in entry.manifest.ingress if r.route == route)
    stamp = str(int(time.time()))
    headers = {"X-Timestamp": stamp, "X-Signature": sign(sig, SECRET, body, id=delivery, timestamp=stamp)}
    if delivery is not None:
        headers["X-Delivery"] = delivery
    return headers


async def test_hostile_ingress_page_is_served_inert_on_the_api_origin(
    host: Host, write_plugin: WritePlugin, client: httpx.AsyncClient
) -> None:
    entry = await _evil(host, write_plugin)
    headers = {**_signed(entry, "page", b"", "d-page"), "X-API-Key": "admin-key", "Cookie": "s=1"}
    r = await client.post("/ingress/evil/page", headers=headers)
    assert r.status_code == 200 and SCRIPT in r.text  # the handler ran and answered its page
    assert r.headers["content-type"] == "text/plain; charset=utf-8"  # never text/html
    csp = r.headers.get_list("content-security-policy")
    assert csp == ["sandbox; default-src 'none'; frame-ancestors 'none'; form-action 'none'"]
    assert r.headers.get_list("x-content-type-options") == ["nosniff"]
    assert "clear-site-data" not in r.headers
    seen = r.headers["x-seen-headers"].split(",")
    assert "x-signature" in seen and "x-api-key" not in seen and "cookie" not in seen


async def test_replayed_delivery_is_processed_once(
    host: Host, write_plugin: WritePlugin, client: httpx.AsyncClient
) -> None:
    entry = await _evil(host, write_plugin)
    body = b'{"order": 1}'
    first = _signed(entry, "count", body, "d-1")
    assert (await client.post("/ingress/evil/count", content=body, headers=first)).json() == {"processed": 1}
    again = await client.post("/ingress/evil/count", content=body, headers=first)
    assert again.status_code == 409
    renamed = await client.post("/ingress/evil/count", content=body, headers={**first, "X-Delivery": "d-2"})
    assert renamed.status_code == 401  # the id is signed: a replay cannot pick a fresh one
    no_id = _signed(entry, "count", body, None)
    missing = await client.post("/ingress/evil/count", content=body, headers=no_id)
    assert missing.status_code == 400 and "delivery id" in missing.json()["error"]
    assert host.storage.get("evil", "processed") == (True, 1)


@pytest.mark.parametrize(("where", "doc"), [
    ("ingress[0].signature.header", {"ingress": [{"route": "r", "signature": {
        "scheme": "shared-secret", "header": "Content-Type", "prefix": "application/x-www-form-urlencoded"}}]}),
    ("configSchema.properties.webhookSecret.default", {
        "configSchema": {"type": "object", "properties": {
            "webhookSecret": {"type": "string", "secret": True, "default": "x-www-form-urlencoded"}}},
        "ingress": [{"route": "r", "signature": {"scheme": "shared-secret", "header": "X-Token"}}]}),
])
async def test_a_manifest_that_lets_a_form_post_sign_is_refused(
    host: Host, write_plugin: WritePlugin, where: str, doc: dict[str, Any]
) -> None:
    doc = {"configSchema": SCHEMA, **doc}
    with pytest.raises(ManifestError) as info:
        host.load_plugin(write_plugin(CODE, id="formpost", permissions=["webhook:ingress"], **doc))
    assert info.value.field == where
