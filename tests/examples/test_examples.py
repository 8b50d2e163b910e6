"""Every example plugin, run as a user would run it: untrusted and fully confined, through
plugbox.testing (and the HTTP API for the ingress example)."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugbox.api import create_app
from plugbox.settings import load_settings
from plugbox.testing import run_plugin

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plugins"

pytestmark = pytest.mark.timeout(60)


def test_every_example_has_a_test_here() -> None:
    tested = {"echo", "counter", "http-action", "ingress-webhook", "catchall", "office-hours"}
    assert {p.name for p in EXAMPLES.iterdir() if p.is_dir()} == tested


async def test_echo_echoes_and_counts() -> None:
    async with run_plugin(EXAMPLES / "echo") as plugin:
        await plugin.inbound("hello")
        await plugin.inbound("again")
        assert [m["body"] for m in plugin.sent] == ["echo: hello", "echo: again"]
        assert plugin.storage == {"echoed": 2}


def test_office_hours_the_openwa_port_passes_its_own_tests_under_plugbox_test() -> None:
    # docs/porting-from-openwa.md walks through this plugin; its tests are the author's, run as an author would
    out = subprocess.run([sys.executable, "-m", "plugbox", "test", str(EXAMPLES / "office-hours"), "-q"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 passed" in out.stdout


async def test_office_hours_answers_after_hours_only() -> None:
    async with run_plugin(EXAMPLES / "office-hours") as plugin:
        plugin.engine.clock = lambda: 1796040000.0  # Monday 2026-11-30 12:00 UTC: open
        await plugin.inbound("hello")
        plugin.engine.clock = lambda: 1796068800.0  # 20:00 UTC: closed
        await plugin.inbound("hello?")
        assert [m["body"] for m in plugin.sent] == [
            "Thanks for your message! We are closed now and answer from 9:00 to 17:00."]


async def test_catchall_records_each_event_it_sees() -> None:
    # The full scenario, every event at least once, is tests/integration/test_every_event.py.
    async with run_plugin(EXAMPLES / "catchall") as plugin:
        await plugin.inbound("hello")
        latest = await plugin.inbound("again")
        received = plugin.storage["seen:message:received"]
        assert received["count"] == 2 and received["last"]["id"] == latest["id"]
        assert received["last"]["body"] == "again"
        assert plugin.storage["seen:message:persisted"]["count"] == 2


async def test_counter_counts_per_chat_and_answers_count() -> None:
    async with run_plugin(EXAMPLES / "counter") as plugin:
        for body in ("a", "b", "c"):
            await plugin.inbound(body, chat_id="15550001111@c.us")
        await plugin.inbound("x", chat_id="15550002222@c.us")
        asked = await plugin.inbound("!count", chat_id="15550001111@c.us")
        assert plugin.storage == {"count:15550001111@c.us": 4, "count:15550002222@c.us": 1}
        [reply] = plugin.sent
        assert reply["body"] == "4 messages in this chat so far" and reply["quotedId"] == asked["id"]


class _Ask(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Ask.seen.append({"auth": self.headers.get("authorization"), "question": body["question"]})
        answer = json.dumps({"answer": body["question"].upper()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ask_server() -> Iterator[str]:
    _Ask.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ask)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ask"
    finally:
        server.shutdown()
        server.server_close()


async def test_http_action_asks_the_endpoint_and_replies(tmp_path: Path, ask_server: str) -> None:
    # The example allows its endpoint through allowConfigHosts, which only admits https hosts; this
    # local http server is allowed explicitly instead, and exempted from the public-address check.
    plugin_dir = tmp_path / "http-action"
    shutil.copytree(EXAMPLES / "http-action", plugin_dir)
    manifest = json.loads((plugin_dir / "manifest.json").read_text())
    manifest["net"]["allow"] = ["127.0.0.1"]
    (plugin_dir / "manifest.json").write_text(json.dumps(manifest))
    for path in (tmp_path, plugin_dir):
        path.chmod(0o755)
    settings = load_settings(environ={}, data_dir=str(tmp_path / "data"), fetch_exempt_hosts=("127.0.0.1",))
    token = "tok-very-secret-123"
    async with run_plugin(plugin_dir, settings=settings, config={"endpoint": ask_server, "apiToken": token}) as plugin:
        await plugin.inbound("/ask what time is it")
        await plugin.inbound("no question here")
        assert [m["body"] for m in plugin.sent] == ["WHAT TIME IS IT"]
        assert _Ask.seen == [{"auth": "Bearer " + token, "question": "what time is it"}]
        assert token not in json.dumps(plugin.logs)


async def test_http_action_replies_politely_when_the_endpoint_is_refused() -> None:
    # Without an exemption, a loopback endpoint is refused before any connection is made.
    config = {"endpoint": "https://127.0.0.1:9/ask"}
    async with run_plugin(EXAMPLES / "http-action", config=config) as plugin:
        await plugin.inbound("/ask anything")
        assert [m["body"] for m in plugin.sent] == ["sorry, the service is not reachable"]
        assert any("ask failed" in line["message"] for line in plugin.logs)


async def test_ingress_webhook_posts_a_signed_alert_to_the_chat() -> None:
    secret = "alert-secret"
    config = {"webhookSecret": secret, "sessionId": "test", "chatId": "15550009999@c.us"}
    async with run_plugin(EXAMPLES / "ingress-webhook", config=config) as plugin:
        transport = httpx.ASGITransport(app=create_app(plugin.host))
        async with httpx.AsyncClient(transport=transport, base_url="http://plugbox") as client:
            body = json.dumps({"text": "disk almost full"}).encode()
            timestamp = str(int(time.time()))
            # What a sender computes, per the manifest: HMAC-SHA256 over "{timestamp}.{body}", hex.
            signature = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                                             hashlib.sha256).hexdigest()
            headers = {"X-Signature": signature, "X-Timestamp": timestamp, "content-type": "application/json"}
            accepted = await client.post("/ingress/ingress-webhook/alert", content=body, headers=headers)
            forged = await client.post("/ingress/ingress-webhook/alert", content=body,
                                       headers={**headers, "X-Signature": "sha256=" + "0" * 64})
        assert accepted.status_code == 202, accepted.text
        assert forged.status_code == 401
        assert [(m["chatId"], m["body"]) for m in plugin.sent] == [("15550009999@c.us", "ALERT: disk almost full")]
