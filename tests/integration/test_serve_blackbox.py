"""Black-box: the real `plugbox serve` process on a free port. Install the example echo plugin by zip
upload, enable it, inject a message, see the reply and the metrics move; SIGTERM → exit 0 with no
worker (or zygote) process left behind."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import alive
from tests.serving import descendants, serving

ROOT = Path(__file__).parents[2]
ECHO = ROOT / "examples" / "plugins" / "echo"
ADMIN_KEY = "blackbox-admin-key"
HEADERS = {"X-API-Key": ADMIN_KEY}


def _echo_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in ECHO.iterdir():
            if path.is_file():
                zf.write(path, f"echo/{path.name}")
    return buf.getvalue()


def plugins_list(url: str) -> str:
    """`plugbox plugins list` as an operator runs it (a wide terminal, so no cell is wrapped)."""
    env = {**os.environ, "COLUMNS": "400", "PLUGBOX_API_KEY": ADMIN_KEY}
    out = subprocess.run([sys.executable, "-c", "from plugbox.cli import main; main()", "plugins", "list",
                          "--url", url], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    with serving(tmp_path, ADMIN_KEY) as running:
        yield running


def test_serve_installs_echoes_counts_and_stops_cleanly(
        server: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    proc, url, log = server
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as c:
        assert c.get("/api/plugins", headers={"X-API-Key": "wrong"}).status_code == 401
        r = c.post("/api/plugins", files={"file": ("echo.zip", _echo_zip(), "application/zip")})
        assert r.status_code == 201, r.text
        assert [s["id"] for s in c.get("/api/sessions").json()["sessions"]] == ["default"]
        r = c.post("/api/plugins/echo/enable")  # enabled on no session yet: flagged, in the API and the CLI
        assert r.status_code == 200 and r.json()["warnings"] and "no session" in r.json()["warnings"][0], r.text
        listed = plugins_list(url)
        assert "warning: enabled on no session" in listed, listed
        r = c.put("/api/plugins/echo/sessions", json={"activeSessions": ["defualt"]})
        assert r.status_code == 404 and "'defualt'" in r.json()["error"]
        assert c.put("/api/plugins/echo/sessions", json={"activeSessions": ["default"]}).status_code == 200
        assert "warning:" not in plugins_list(url)
        r = c.post("/api/plugins/echo/enable")
        assert r.status_code == 200 and r.json()["status"] == "enabled", r.text
        r = c.post("/api/sessions/default/messages", json={"chatId": "15550001234@c.us", "body": "ping"})
        assert r.status_code == 200, r.text
        assert [m["body"] for m in c.get("/api/sent").json()["sent"]] == ["echo: ping"]
        metrics = c.get("/metrics").text
        calls = [line for line in metrics.splitlines()
                 if line.startswith("plugbox_capability_calls_total") and 'outcome="ok"' in line]
        assert calls and sum(float(line.split()[-1]) for line in calls) >= 2  # send_text + storage
    spawned = descendants(proc.pid)
    assert spawned, "expected a zygote and a worker under the server"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in spawned) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in spawned if alive(pid)]
    output = log.read_text()
    assert ADMIN_KEY not in output
    assert "Finished server process" in output
