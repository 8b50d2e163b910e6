"""What the dashboard reads besides the plugin JSON: the live event stream (`/api/events`: log lines
and failures as they happen, per plugin or all), the plugins-dir entries that failed to load, and
the dashboard's own files under a CSP that allows no inline code and no other origin."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugbox.api import create_app
from plugbox.host import Host
from tests.integration.conftest import SESSION, WritePlugin, enable, wait_for

ADMIN = {"X-API-Key": "admin-key"}
READER = {"Authorization": "Bearer reader-key"}

DENIED = """
from plugbox.sdk import Plugin

class P(Plugin):
    async def on_load(self, ctx):
        ctx.logger.info("loaded")
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook):
        await self.ctx.storage.set("k", "v")
"""


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {"api_keys": ("reader-key",), "admin_api_keys": ("admin-key",),
            "plugins_dir": str(tmp_path / "plugins"), "live_feed_max_readers": 2, "live_feed_queue_max": 20}


@pytest.fixture
async def client(host: Host) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(host)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


def events_of(body: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in body.split("\n\n"):
        kind = re.search(r"^event: (.*)$", frame, re.M)
        data = re.search(r"^data: (.*)$", frame, re.M)
        if kind and data:
            out.append((kind.group(1), json.loads(data.group(1))))
    return out


async def read_stream(client: httpx.AsyncClient, host: Host, path: str, act: Any) -> list[tuple[str, dict[str, Any]]]:
    """GET the stream, run `act` once it is subscribed, then close the feed (as a server shutdown
    does) so the response ends; the in-process transport hands back the whole body."""
    readers = host.feed.subscribers
    request = asyncio.ensure_future(client.get(path, headers=READER))
    await wait_for(lambda: host.feed.subscribers > readers or request.done())
    await act()
    host.feed.close()
    r = await request
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert host.feed.subscribers == 0  # the reader is gone once its stream ended
    return events_of(r.text)


async def test_event_stream_carries_a_permission_denial_as_log_line_and_failure(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin(DENIED, permissions=[]))

    async def act() -> None:
        await host.inject_inbound(SESSION, "15550001234@c.us", "hi")

    events = await read_stream(client, host, "/api/events?plugin=p", act)
    assert events[0] == ("log", {"plugin": "p", "level": "info", "message": "loaded", "ts": events[0][1]["ts"]})
    assert ("failure", {"plugin": "p", "class": "permission_denied"}) in events
    denial = [d for kind, d in events if kind == "log" and "storage:use" in d["message"]]
    assert denial and denial[0]["level"] == "warning"


async def test_event_stream_of_one_plugin_leaves_out_the_others(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin(DENIED, id="a", permissions=[]))
    await enable(host, write_plugin(DENIED, id="b", permissions=[]))

    async def act() -> None:
        await host.inject_inbound(SESSION, "15550001234@c.us", "hi")

    events = await read_stream(client, host, "/api/events?plugin=b", act)
    assert {d["plugin"] for _, d in events} == {"b"}
    assert ("failure", {"plugin": "b", "class": "permission_denied"}) in events


async def test_event_stream_without_a_plugin_carries_every_plugin_and_no_backlog(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin(DENIED, id="a", permissions=[]))
    await enable(host, write_plugin(DENIED, id="b", permissions=[]))

    async def act() -> None:
        await host.inject_inbound(SESSION, "15550001234@c.us", "hi")

    everything = await read_stream(client, host, "/api/events", act)
    assert {d["plugin"] for kind, d in everything if kind == "failure"} == {"a", "b"}
    assert all(kind != "log" or d["message"] != "loaded" for kind, d in everything)  # no backlog without ?plugin


async def test_a_reader_that_falls_behind_is_told_how_many_events_it_lost(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin("from plugbox.sdk import Plugin\nclass P(Plugin): pass\n"))

    async def act() -> None:  # 25 lines in one step: the stream cannot read in between
        for i in range(25):
            assert host.manager.get("p").logs.emit("info", f"line {i}")

    events = await read_stream(client, host, "/api/events", act)
    assert ("dropped", {"count": 5}) in events  # live_feed_queue_max is 20
    assert [d["message"] for kind, d in events if kind == "log"] == [f"line {i}" for i in range(20)]


async def test_event_stream_refuses_unknown_plugin_missing_key_and_readers_past_the_cap(
        client: httpx.AsyncClient, host: Host) -> None:
    assert (await client.get("/api/events?plugin=nope", headers=READER)).status_code == 404
    assert (await client.get("/api/events")).status_code == 401
    subs = [host.feed.subscribe(), host.feed.subscribe()]  # at live_feed_max_readers
    r = await client.get("/api/events", headers=READER)
    assert r.status_code == 503 and "live_feed_max_readers" in r.json()["error"]
    for sub in subs:
        host.feed.unsubscribe(sub)


async def test_plugin_list_names_the_directories_that_failed_to_load(
        client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> None:
    write_plugin("from plugbox.sdk import Plugin\nclass P(Plugin): pass\n", id="good")
    bad = write_plugin("", id="bad")
    (bad / "manifest.json").write_text('{"id": "bad", "name": "bad"}')
    host.load_directory()
    doc = (await client.get("/api/plugins", headers=READER)).json()
    assert [p["id"] for p in doc["plugins"]] == ["good"]
    assert [b["directory"] for b in doc["broken"]] == ["bad"]
    assert "version" in doc["broken"][0]["error"]  # names the field at fault


async def test_dashboard_files_are_served_under_a_csp_without_inline_code(client: httpx.AsyncClient) -> None:
    page = await client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "unsafe-inline" not in csp and "http" not in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp and "form-action 'none'" in csp
    # The page has no inline script or style for the CSP to refuse (it would break, not run).
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)
    assert "<style" not in page.text and " style=" not in page.text and " on" + "click=" not in page.text
    for path, media in (("/dashboard/app.js", "text/javascript"), ("/dashboard/forms.js", "text/javascript"),
                        ("/dashboard/app.css", "text/css")):
        r = await client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(media), path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert f'"{path}"' in page.text  # the page loads exactly these
