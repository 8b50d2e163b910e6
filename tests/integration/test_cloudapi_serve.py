"""Black-box: the real `plugbox serve` process started with `PLUGBOX_ENGINE=cloudapi`, its Graph base URL
pointed at a fake Graph API on 127.0.0.1. A signed notification POSTed to the webhook route reaches the
confined echo plugin, whose reply arrives at the fake Graph API as Meta's documented send request."""

from __future__ import annotations

import io
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_graph import FakeGraph, fake_graph, fixture, signed
from tests.serving import serving

ROOT = Path(__file__).parents[2]
ECHO = ROOT / "examples" / "plugins" / "echo"
ADMIN_KEY = "cloudapi-admin-key"
HEADERS = {"X-API-Key": ADMIN_KEY}
PNID = "106540352242922"
TOKEN = "EAAG-serve-test-token"
APP_SECRET = "serve-app-secret"
VERIFY = "serve-verify-token"


def _echo_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in ECHO.iterdir():
            if path.is_file():
                zf.write(path, f"echo/{path.name}")
    return buf.getvalue()


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    with fake_graph() as g:
        yield g


@pytest.fixture
def server(tmp_path: Path, graph: FakeGraph) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    env = {"PLUGBOX_ENGINE": "cloudapi", "PLUGBOX_CLOUDAPI_ACCESS_TOKEN": TOKEN,
           "PLUGBOX_CLOUDAPI_APP_SECRET": APP_SECRET, "PLUGBOX_CLOUDAPI_VERIFY_TOKEN": VERIFY,
           "PLUGBOX_CLOUDAPI_PHONE_NUMBER_IDS": PNID, "PLUGBOX_CLOUDAPI_BASE_URL": graph.url}
    with serving(tmp_path, ADMIN_KEY, settings=env) as running:
        yield running


def test_serve_with_the_cloud_engine_answers_a_signed_notification_through_the_graph_api(
        server: tuple[subprocess.Popen[bytes], str, Path], graph: FakeGraph) -> None:
    _, url, log = server
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as c:
        assert c.get("/api/sessions").json()["sessions"] == [
            {"id": PNID, "status": "ready", "live": True, "me": None}]
        assert c.post("/api/plugins", files={"file": ("echo.zip", _echo_zip(), "application/zip")}).status_code == 201
        assert c.put("/api/plugins/echo/sessions", json={"activeSessions": [PNID]}).status_code == 200
        r = c.post("/api/plugins/echo/enable")
        assert r.status_code == 200 and r.json()["status"] == "enabled", r.text

        r = c.get("/webhooks/cloudapi", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY,
                                                "hub.challenge": "424242"})
        assert r.status_code == 200 and r.text == "424242"

        body = fixture("notification_text.json")
        unsigned = c.post("/webhooks/cloudapi", content=body, headers={"Content-Type": "application/json"})
        assert unsigned.status_code == 401 and graph.requests == []

        r = c.post("/webhooks/cloudapi", content=body, headers=signed(APP_SECRET, body))
        assert r.status_code == 200, r.text
    assert graph.received.wait(10), log.read_text()
    [request] = graph.requests
    assert request.path == f"/v21.0/{PNID}/messages"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.body["to"] == "16505551234"
    assert request.body["text"]["body"] == "echo: Does it come in another color?"
    logged = log.read_text()
    assert "hub.challenge=424242" in logged  # the handshake was logged, without its token
    assert TOKEN not in logged and APP_SECRET not in logged and VERIFY not in logged
