"""Black-box: the real `plugbox serve` process on a free port. Install the example echo plugin by zip
upload, enable it, inject a message, see the reply and the metrics move; SIGTERM → exit 0 with no
worker (or zygote) process left behind."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import alive

ROOT = Path(__file__).parents[2]
ECHO = ROOT / "examples" / "plugins" / "echo"
ADMIN_KEY = "blackbox-admin-key"
HEADERS = {"X-API-Key": ADMIN_KEY}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _echo_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in ECHO.iterdir():
            if path.is_file():
                zf.write(path, f"echo/{path.name}")
    return buf.getvalue()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOX_")}
    env.update({"PLUGBOX_DATA_DIR": str(tmp_path / "data"), "PLUGBOX_PLUGINS_DIR": str(tmp_path / "plugins"),
                "PLUGBOX_ADMIN_API_KEYS": ADMIN_KEY})
    cmd = [sys.executable, "-c", "from plugbox.cli import main; main()", "serve", "--port", str(port)]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"plugbox serve did not come up (rc={proc.poll()}):\n{log.read_text()}")
            time.sleep(0.1)
        yield proc, url, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_serve_installs_echoes_counts_and_stops_cleanly(
        server: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    proc, url, log = server
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as c:
        assert c.get("/api/plugins", headers={"X-API-Key": "wrong"}).status_code == 401
        r = c.post("/api/plugins", files={"file": ("echo.zip", _echo_zip(), "application/zip")})
        assert r.status_code == 201, r.text
        assert [s["id"] for s in c.get("/api/sessions").json()["sessions"]] == ["default"]
        assert c.put("/api/plugins/echo/sessions", json={"activeSessions": ["default"]}).status_code == 200
        r = c.post("/api/plugins/echo/enable")
        assert r.status_code == 200 and r.json()["status"] == "enabled", r.text
        r = c.post("/api/sessions/default/messages", json={"chatId": "15550001234@c.us", "body": "ping"})
        assert r.status_code == 200, r.text
        assert [m["body"] for m in c.get("/api/sent").json()["sent"]] == ["echo: ping"]
        metrics = c.get("/metrics").text
        calls = [line for line in metrics.splitlines()
                 if line.startswith("plugbox_capability_calls_total") and 'outcome="ok"' in line]
        assert calls and sum(float(line.split()[-1]) for line in calls) >= 2  # send_text + storage
    spawned = _descendants(proc.pid)
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
