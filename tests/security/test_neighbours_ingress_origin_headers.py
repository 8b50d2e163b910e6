"""A plugin's ingress response must not set policy for the whole API origin.

The answer of a sync route's handler is served on the API origin, where the dashboard keeps the
operator's key. `plugbox.api.routes.ingress._response` already refuses the headers that run,
frame or sniff something there (`Set-Cookie`, `Clear-Site-Data`, CSP, HSTS, `Link`, ...), but a
blocklist lets through what it does not name. Among them are headers a browser keeps for the whole
origin, long after the plugin's response:

- `NEL` with `Report-To`: Network Error Logging. The browser then reports the operator's requests
  to that origin (the admin API's URLs, methods, status codes, timings, for `max_age` seconds and
  `success_fraction` of successful ones too) to the plugin's collector.
- `Alt-Svc`: where the browser goes for every later request to the origin.
- `Accept-CH` / `Critical-CH`: which client hints the browser sends on every later request.
- `Set-Login`: the origin's login status, as the browser's identity APIs see it.
- `Referrer-Policy` in another letter case: the host's own `no-referrer` was overwritten only
  under its exact spelling, so the plugin's came out beside it.

Measured before the fix: every one of them reached the response as the plugin gave it.

A real confined worker, through the HTTP API. Asserts: the handler ran (its own header and body
came through), none of those headers came out as the plugin set them, and the host's own security
headers are there, once each.
"""

from __future__ import annotations

import sys

import httpx
import pytest

from plugbox.api.routes.ingress import _response
from plugbox.host import Host
from plugbox.lifecycle import Status

from .conftest import Attack, enable

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(120)]

ROUTE = [{"route": "in", "signature": {"scheme": "none"}}]
ORIGIN_WIDE = {
    "NEL": '{"report_to":"plugin","max_age":31536000,"include_subdomains":true,"success_fraction":1.0}',
    "Report-To": '{"group":"plugin","max_age":31536000,"endpoints":[{"url":"https://collector.example/r"}]}',
    "Reporting-Endpoints": 'plugin="https://collector.example/r"',
    "Alt-Svc": 'h2="collector.example:443"; ma=31536000; persist=1',
    "Accept-CH": "Sec-CH-UA-Full-Version-List, Sec-CH-UA-Platform-Version",
    "Critical-CH": "Sec-CH-UA-Full-Version-List",
    "Set-Login": "logged-out",
    "referrer-policy": "unsafe-url",
}

ANSWERS = """
from plugbox.sdk import Plugin

HEADERS = {headers!r}


class Answers(Plugin):
    def on_load(self, ctx):
        ctx.register_webhook("in", self.answer)

    async def answer(self, request):
        return {{"status": 200, "body": "ok", "headers": {{**HEADERS, "X-Plugin": "mine"}}}}
"""


@pytest.mark.parametrize("settings_overrides", [{"allow_unsigned_ingress": True}])
async def test_an_ingress_response_sets_no_policy_for_the_whole_api_origin(
        host: Host, attack: Attack, client: httpx.AsyncClient) -> None:
    entry = await enable(host, attack.write_plugin(ANSWERS.format(headers=ORIGIN_WIDE), id="plugin",
                                                   permissions=["webhook:ingress"], ingress=ROUTE))
    assert entry.status == Status.ENABLED, entry.error
    r = await client.post("/api/ingress/plugin/default/in", content=b"{}")
    assert r.status_code == 200 and r.text == "ok" and r.headers["x-plugin"] == "mine"  # the handler ran
    passed = {name: r.headers.get_list(name) for name in ORIGIN_WIDE
              if ORIGIN_WIDE[name] in r.headers.get_list(name)}
    print(f"\norigin-wide headers the plugin set that reached the response: {sorted(passed)}")
    assert passed == {}
    assert r.headers.get_list("referrer-policy") == ["no-referrer"]
    assert r.headers.get_list("x-content-type-options") == ["nosniff"]
    assert r.headers["content-security-policy"].startswith("sandbox")
    await attack.aftermath()


@pytest.mark.parametrize("status", [204, 205, 304])
def test_a_response_that_may_carry_no_body_is_sent_without_the_plugins(status: int) -> None:
    """A 204, 205 or 304 with a body is refused by the HTTP server once the response has started
    (h11: "Too much data for declared Content-Length"), which logs a traceback per request: a sender
    hitting such a route would fill the host's log, outside the plugin's log budget. The body is
    dropped; the status and the plugin's other headers stand."""
    response = _response({"status": status, "body": "x" * 1000, "headers": {"X-Plugin": "mine"}})
    assert response.status_code == status and response.body == b""
    assert response.headers["x-plugin"] == "mine" and int(response.headers.get("content-length", "0")) == 0
