"""`plugbox plugins ...` as a user runs it: the real CLI in a subprocess against a real `plugbox serve`.
Covers show, sessions, uninstall, logs (and --follow), ingress instances, --version, the key variable
shared with the server and its 401 hint, full ids in piped tables and the progress line of a long operation."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving import serving

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADMIN_KEY = "cli-admin-key"
LONG_ID = "a-plugin-id-long-enough-that-an-80-column-table-would-cut-it"

pytestmark = pytest.mark.timeout(180)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOX_")}


def _cli(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = _clean_env()
    return subprocess.run([str(BIN / "plugbox"), *args, *(["--url", url] if url else [])],
                          env={**base, "COLUMNS": "80", **(env or {})},
                          capture_output=True, text=True, timeout=90)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("cli")
    long_src = tmp / "src-long"
    long_src.mkdir()
    manifest = (REPO / "examples/plugins/echo/manifest.json").read_text().replace('"echo"', f'"{LONG_ID}"')
    (long_src / "manifest.json").write_text(manifest)
    (long_src / "main.py").write_text((REPO / "examples/plugins/echo/main.py").read_text())
    plugins = {"echo": REPO / "examples/plugins/echo", LONG_ID: long_src,
               "ingress-webhook": REPO / "examples/plugins/ingress-webhook"}
    with serving(tmp, ADMIN_KEY, plugins=plugins) as (_proc, url, _log):
        yield url


def test_version_prints_the_package_version() -> None:
    from plugbox import __version__

    run = _cli("", "--version")
    assert run.returncode == 0
    assert run.stdout.strip() == f"plugbox {__version__}"


def test_the_servers_admin_variable_is_enough_for_the_cli(server: str) -> None:
    run = _cli(server, "plugins", "show", "echo", "--json", env={"PLUGBOX_ADMIN_API_KEYS": f"{ADMIN_KEY},other"})
    assert run.returncode == 0, run.stderr
    assert '"id": "echo"' in run.stdout


def test_a_missing_or_wrong_key_names_the_variable_to_set(server: str) -> None:
    for env in ({}, {"PLUGBOX_API_KEY": "wrong"}):
        run = _cli(server, "plugins", "list", env=env)
        assert run.returncode == 1
        assert "401" in run.stderr
        assert "PLUGBOX_API_KEY" in run.stderr and "PLUGBOX_ADMIN_API_KEYS" in run.stderr


def test_a_piped_table_keeps_whole_ids(server: str) -> None:
    run = _cli(server, "plugins", "list", env={"PLUGBOX_API_KEY": ADMIN_KEY})
    assert run.returncode == 0, run.stderr
    assert LONG_ID in run.stdout


def test_sessions_show_set_and_enable_reports_progress_then_logs(server: str) -> None:
    env = {"PLUGBOX_API_KEY": ADMIN_KEY}
    run = _cli(server, "plugins", "sessions", "echo", env=env)
    assert run.returncode == 0, run.stderr
    assert "active: (none)" in run.stdout

    run = _cli(server, "plugins", "sessions", "echo", "default", env=env)
    assert run.returncode == 0, run.stderr
    assert "active: default" in run.stdout

    run = _cli(server, "plugins", "enable", "echo", env=env)
    assert run.returncode == 0, run.stderr
    assert "waiting" in run.stderr
    show = _cli(server, "plugins", "show", "echo", env=env)
    assert "enabled" in show.stdout and "default" in show.stdout

    r = httpx.post(f"{server}/api/sessions/default/messages", headers={"X-API-Key": ADMIN_KEY},
                   json={"chatId": "15550001111@c.us", "body": "hi"}, timeout=30)
    assert r.status_code < 300, r.text
    for _ in range(50):
        logs = _cli(server, "plugins", "logs", "echo", env=env)
        if "echoed" in logs.stdout:
            break
    assert logs.returncode == 0, logs.stderr
    assert "INFO" in logs.stdout and "echoed" in logs.stdout


def test_logs_follow_prints_new_lines_as_they_happen(server: str, tmp_path: Path) -> None:
    """--follow reads the server's live stream: the recent lines, then each new one as it is logged
    (not only what was there when it started); Ctrl-C ends it cleanly."""
    env = {"PLUGBOX_API_KEY": ADMIN_KEY}
    assert _cli(server, "plugins", "sessions", "echo", "default", env=env).returncode == 0
    assert _cli(server, "plugins", "enable", "echo", env=env).returncode == 0
    before = _cli(server, "plugins", "logs", "echo", env=env).stdout.count("echoed")
    out = tmp_path / "follow.txt"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOX_")}
    with out.open("w") as sink:
        follower = subprocess.Popen([str(BIN / "plugbox"), "plugins", "logs", "echo", "--follow", "--url", server],
                                    env={**base, **env}, stdout=sink, stderr=subprocess.PIPE, text=True)
    try:
        _until(lambda: out.read_text().count("echoed") >= before, "the recent lines")
        r = httpx.post(f"{server}/api/sessions/default/messages", headers={"X-API-Key": ADMIN_KEY},
                       json={"chatId": "15550001111@c.us", "body": "follow me"}, timeout=30)
        assert r.status_code < 300, r.text
        _until(lambda: out.read_text().count("echoed") == before + 1, "the new line")
        assert follower.poll() is None  # still following
    finally:
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err


def _until(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"--follow never printed {what}"
        time.sleep(0.05)


def test_uninstall_removes_the_plugin(server: str) -> None:
    env = {"PLUGBOX_API_KEY": ADMIN_KEY}
    run = _cli(server, "plugins", "uninstall", LONG_ID, env=env)
    assert run.returncode == 0, run.stderr
    assert f"uninstalled {LONG_ID}" in run.stdout
    gone = _cli(server, "plugins", "show", LONG_ID, env=env)
    assert gone.returncode == 1
    assert "404" in gone.stderr


def test_install_from_a_url_goes_through_the_servers_guard(server: str) -> None:
    env = {"PLUGBOX_API_KEY": ADMIN_KEY}
    run = _cli(server, "plugins", "install", "http://127.0.0.1:9/p.zip", "--sha256", "0" * 64, env=env)
    assert run.returncode == 1
    assert "400: install from URL: address 127.0.0.1 is not public" in run.stderr
    run = _cli(server, "plugins", "install", "local.zip", "--sha256", "0" * 64, env=env)
    assert run.returncode == 2 and "--sha256 applies to a URL" in run.stderr


def test_ingress_instances_are_created_with_a_prompted_secret_listed_masked_and_deleted(server: str) -> None:
    env = {"PLUGBOX_API_KEY": ADMIN_KEY}
    secret = "cli-instance-secret-0123"
    run = subprocess.run([str(BIN / "plugbox"), "plugins", "ingress", "create", "ingress-webhook", "--id", "acme",
                          "--secret", "webhookSecret", "--url", server],
                         input=secret + "\n", env={**_clean_env(), **env, "COLUMNS": "80"},
                         capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    assert "/api/ingress/ingress-webhook/acme/alert" in run.stdout and secret not in run.stdout
    listed = _cli(server, "plugins", "ingress", "list", "ingress-webhook", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert '"webhookSecret": "********"' in listed.stdout and secret not in listed.stdout
    # The secret reached the server as typed: a delivery signed with it passes the signature check
    # (the plugin is not enabled, so the sync route then answers 503, not 401).
    stamp, body = str(int(time.time())), b"{}"
    sig = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    r = httpx.post(f"{server}/api/ingress/ingress-webhook/acme/alert", content=body,
                   headers={"X-Timestamp": stamp, "X-Signature": f"sha256={sig}"})
    assert r.status_code == 503 and "not enabled" in r.text, r.text
    assert _cli(server, "plugins", "ingress", "delete", "ingress-webhook", "acme", env=env).returncode == 0
    r = httpx.post(f"{server}/api/ingress/ingress-webhook/acme/alert", content=body,
                   headers={"X-Timestamp": stamp, "X-Signature": f"sha256={sig}"})
    assert r.status_code == 404
