"""Operators see every failure (issue 14) and crash loops open the breaker (issue 12 class 8), with
real confined workers: a denied capability shows in `lastError` and in
`plugbox_capability_denied_total{plugin=...}` within a second; a plugin enabled on no session is
flagged; an unknown session is refused with a 404 naming it; a worker that dies shortly after each
start, answering hooks in between, ends in `error` with the breaker named and is not restarted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from plugbox.api import create_app
from plugbox.host import Host
from plugbox.lifecycle import Status
from tests.integration.conftest import SESSION, WritePlugin, enable

ADMIN = {"X-API-Key": "admin-key"}
MESSAGE = {"chatId": "15550001111@c.us", "body": "hi"}

NO_SEND_PERMISSION = """
from plugbox.sdk import Plugin

class P(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook):
        await self.ctx.messages.send_text(hook.session_id, hook.data["chatId"], "reply")
"""

CRASHES_SOON_AFTER_START = """
import asyncio, os
from plugbox.sdk import Plugin

class P(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_enable(self, ctx):
        asyncio.get_running_loop().call_later(0.4, os._exit, 3)

    async def on_message(self, hook):
        return None
"""


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"admin_api_keys": ("admin-key",)}


@pytest.fixture
async def client(host: Host) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(host)), base_url="http://t") as c:
        yield c


async def test_a_denied_permission_shows_in_last_error_and_metrics_within_a_second(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin(NO_SEND_PERMISSION, permissions=["storage:use"]))
    started = time.monotonic()
    r = await client.post(f"/api/sessions/{SESSION}/messages", json=MESSAGE, headers=ADMIN)
    assert r.status_code == 200 and r.json()["sent"] == []
    while True:
        doc = (await client.get("/api/plugins/p", headers=ADMIN)).json()
        metrics = (await client.get("/metrics", headers=ADMIN)).text
        denied = 'plugbox_capability_denied_total{plugin="p",verb="messages.send_text"} 1.0' in metrics
        if (denied and doc["lastError"] is not None) or time.monotonic() - started > 1.0:
            break
        await asyncio.sleep(0.02)
    assert time.monotonic() - started <= 1.0, "the denial took more than a second to show"
    assert denied, metrics
    assert 'plugbox_capability_calls_total{outcome="denied",plugin="p",verb="messages.send_text"} 1.0' in metrics
    classes = [f["class"] for f in doc["recentFailures"]]
    assert classes[0] == "permission_denied"
    assert "'messages:send'" in doc["recentFailures"][0]["message"]
    assert "'messages:send'" in doc["lastError"]["message"]  # the handler's error names it too
    assert doc["lastError"]["timestamp"].endswith("+00:00")
    assert doc["failures"]["permission_denied"] == 1
    assert doc["status"] == "enabled"  # one denied message is visible, not fatal
    assert any("lacks permission 'messages:send'" in line["message"] for line in doc["logs"])


async def test_an_enabled_plugin_on_no_session_is_flagged(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin(NO_SEND_PERMISSION), sessions=())
    listed = (await client.get("/api/plugins", headers=ADMIN)).json()["plugins"]
    assert any("no session" in w for w in listed[0]["warnings"])
    r = await client.put("/api/plugins/p/sessions", json={"activeSessions": [SESSION]}, headers=ADMIN)
    assert r.status_code == 200
    assert (await client.get("/api/plugins/p", headers=ADMIN)).json()["warnings"] == []


async def test_an_unknown_session_is_a_404_naming_it_and_changes_nothing(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin(NO_SEND_PERMISSION))
    r = await client.put("/api/plugins/p/sessions", json={"activeSessions": [SESSION, "typo-session"]},
                         headers=ADMIN)
    assert r.status_code == 404 and "'typo-session'" in r.json()["error"]
    assert host.plugin("p").active_sessions == (SESSION,)


async def test_a_worker_that_crashes_soon_after_each_start_opens_the_breaker(
        host: Host, write_plugin: WritePlugin) -> None:
    entry = await enable(host, write_plugin(CRASHES_SOON_AFTER_START))
    pids: set[int] = set()
    deadline = time.monotonic() + 20
    while "circuit breaker" not in (entry.error or "") or entry.runtime is not None:
        assert time.monotonic() < deadline, "the breaker never opened"
        if entry.runtime is not None and entry.status == Status.ENABLED:
            pids.add(entry.runtime.pid or 0)
            # it answers between crashes: these successes must not keep the breaker closed
            await host.dispatch("message:received", {"id": "m1", "chatId": "c1", "body": "x"}, SESSION)
        await asyncio.sleep(0.05)
    view = host.plugin("p")
    assert "circuit breaker open after 5 consecutive failures" in (view.error or "")
    assert view.last_error is not None and view.last_error.kind == "breaker_open"
    assert view.failure_counts["worker_crash"] == 5
    assert len(pids) == 5  # five starts, five workers, then no more
    await asyncio.sleep(1.0)  # the backoff is 50-200 ms here: a restart would have come by now
    assert entry.runtime is None and host.plugin("p").status == Status.ERROR
    assert host.plugin("p").failure_counts["worker_crash"] == 5
