"""Many hosts, one PostgreSQL database (docs/postgres.md): two real `plugbox serve` processes.

A zip installed and enabled on one host is enabled on the other within 2 s; each message of a
session runs its hooks once, on the session's lease holder; when that host is SIGKILLed the other
takes the session over within 10 s; everything survives a restart of both."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.integration.test_serve_blackbox import _echo_zip
from tests.serving import serving

ADMIN_KEY = "cluster-admin-key"
HEADERS = {"X-API-Key": ADMIN_KEY}
CHAT = "15550001234@c.us"


def _wait_for(check: Callable[[], bool], within_s: float) -> float:
    """Seconds until `check()` held; AssertionError past `within_s`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within_s:
            raise AssertionError(f"not within {within_s} s")
        time.sleep(0.05)
    return time.monotonic() - start


def _status(c: httpx.Client, plugin_id: str) -> str | None:
    r = c.get(f"/api/plugins/{plugin_id}")
    return str(r.json()["status"]) if r.status_code == 200 else None


def _replies(c: httpx.Client) -> list[str]:
    return [m["body"] for m in c.get("/api/sent").json()["sent"]]


def _leased(c: httpx.Client) -> bool:
    """Whether this host holds the lease of the `default` session."""
    return bool(next(s for s in c.get("/api/sessions").json()["sessions"] if s["id"] == "default")["leased"])


def _ping(c: httpx.Client, body: str) -> None:
    r = c.post("/api/sessions/default/messages", json={"chatId": CHAT, "body": body})
    assert r.status_code == 200, r.text


def test_two_serve_hosts_share_installs_enables_and_sessions_and_survive_a_restart(
    tmp_path: Path, make_postgres_url: Callable[[], str]
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    shared = {"PLUGBOX_DATABASE_URL": make_postgres_url(), "PLUGBOX_CLUSTER_LEASE_INTERVAL_MS": "500"}
    with ExitStack() as stack:
        (_pa, url_a, _), (_pb, url_b, _) = (
            stack.enter_context(serving(tmp_path / name, ADMIN_KEY, settings=shared)) for name in ("a", "b")
        )
        a = stack.enter_context(httpx.Client(base_url=url_a, headers=HEADERS, timeout=30))
        b = stack.enter_context(httpx.Client(base_url=url_b, headers=HEADERS, timeout=30))
        assert a.post("/api/plugins", files={"file": ("echo.zip", _echo_zip(), "application/zip")}).status_code == 201
        assert a.put("/api/plugins/echo/sessions", json={"activeSessions": ["default"]}).status_code == 200
        r = a.post("/api/plugins/echo/enable")
        assert r.status_code == 200 and r.json()["status"] == "enabled", r.text
        took = _wait_for(lambda: _status(b, "echo") == "enabled", within_s=2.0)
        print(f"enabled on the second host {took:.2f} s after the first")

        # Hooks run once per message: only the lease holder of `default` answers.
        _ping(a, "one")
        _ping(b, "one")
        _wait_for(lambda: len(_replies(a)) + len(_replies(b)) >= 1, within_s=5.0)
        time.sleep(0.5)
        assert sorted(_replies(a) + _replies(b)) == ["echo: one"]

        # Config and session changes on one host reach the other within 1 s.
        assert a.put("/api/plugins/echo/config", json={"prefix": "pong: "}).status_code == 200
        _wait_for(lambda: b.get("/api/plugins/echo/config").json()["config"]["prefix"] == "pong: ", within_s=1.0)
        assert b.put("/api/plugins/echo/sessions", json={"activeSessions": []}).status_code == 200
        _wait_for(lambda: a.get("/api/plugins/echo/sessions").json()["activeSessions"] == [], within_s=1.0)
        assert b.put("/api/plugins/echo/sessions", json={"activeSessions": ["default"]}).status_code == 200
        _wait_for(lambda: a.get("/api/plugins/echo/sessions").json()["activeSessions"] == ["default"], within_s=1.0)
        _ping(a, "two")
        _ping(b, "two")
        _wait_for(lambda: "pong: two" in _replies(a) + _replies(b), within_s=5.0)
        time.sleep(0.5)
        assert sorted(_replies(a) + _replies(b)) == ["echo: one", "pong: two"]

        # A disable on the second host reaches the first.
        assert b.post("/api/plugins/echo/disable").status_code == 200
        _wait_for(lambda: _status(a, "echo") == "disabled", within_s=2.0)
        assert b.post("/api/plugins/echo/enable").status_code == 200
        _wait_for(lambda: _status(a, "echo") == "enabled", within_s=2.0)

    # Both stopped; started again on the same database and directories: nothing was forgotten.
    with ExitStack() as stack:
        running = [stack.enter_context(serving(tmp_path / name, ADMIN_KEY, settings=shared)) for name in ("a", "b")]
        clients = [
            stack.enter_context(httpx.Client(base_url=url, headers=HEADERS, timeout=30)) for _, url, _ in running
        ]
        _wait_for(lambda: all(_status(c, "echo") == "enabled" for c in clients), within_s=10.0)
        _wait_for(lambda: sum(_leased(c) for c in clients) == 1, within_s=5.0)

        # Kill the host holding `default`: the survivor must be answering on it within 10 s.
        owner = next(i for i, c in enumerate(clients) if _leased(c))
        survivor = clients[1 - owner]
        assert not _leased(survivor)
        running[owner][0].send_signal(signal.SIGKILL)
        running[owner][0].wait(timeout=10)
        start = time.monotonic()

        def survivor_answers() -> bool:
            _ping(survivor, "after")
            return "pong: after" in _replies(survivor)  # the config set before the restart

        _wait_for(survivor_answers, within_s=10.0)
        assert _leased(survivor)
        print(f"session moved to the survivor within {time.monotonic() - start:.2f} s")
