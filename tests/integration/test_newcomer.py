"""A newcomer's first plugin, scripted with only what the README and docs show: `plugbox new`,
`plugbox pack`, `plugbox serve`, `plugbox plugins install|sessions|enable|logs`, and the documented
HTTP routes for sending a message, reading what was sent and the metrics. Every CLI command is the
installed console script run from a shell whose PATH has no virtualenv (the server is `plugbox
serve`, started as the other black-box tests start it); the key comes from
`PLUGBOX_ADMIN_API_KEYS`, as in the README. The test also checks that each step it takes is
written in the README or docs, so a step that only works undocumented fails here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.serving import serving

REPO = Path(__file__).resolve().parents[2]
PLUGBOX = str(Path(sys.executable).parent / "plugbox")
KEY = "newcomer-admin-key"

pytestmark = pytest.mark.timeout(150)

# What the script below does, as a reader finds it in the README and docs.
DOCUMENTED = [
    ("README.md", "plugbox new NAME"),
    ("README.md", "plugbox pack DIR [-o OUT.zip]"),
    ("README.md", "plugbox serve"),
    ("README.md", "plugbox plugins list\\|show ID\\|install ZIP\\|"),  # (a Markdown table: \| is |)
    ("README.md", "sessions ID [SESSION...]\\|logs ID [--follow]` `[--url U --api-key K --json]"),
    ("README.md", "plugbox plugins enable echo"),
    ("README.md", "the first key of `PLUGBOX_ADMIN_API_KEYS`"),
    ("README.md", "$B/api/sessions/default/messages"),
    ("README.md", "$B/api/sent?session=default"),
    ("docs/operations.md", "| GET | `/metrics` | read | Prometheus text format |"),
]


def run(*args: str, cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run([PLUGBOX, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"plugbox {' '.join(args)}: {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_the_steps_are_the_documented_ones() -> None:
    for doc, text in DOCUMENTED:
        assert text in (REPO / doc).read_text(), f"{doc} no longer says {text!r}"


def test_newcomer_goes_from_plugbox_new_to_an_answering_plugin(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH") and not k.startswith("PLUGBOX_")}
    env.update({"PATH": "/usr/bin:/bin", "PLUGBOX_ADMIN_API_KEYS": KEY})
    work = tmp_path / "work"
    work.mkdir()

    run("new", "greeter", cwd=work, env=env)
    run("pack", "greeter", "-o", "greeter.zip", cwd=work, env=env)
    assert (work / "greeter.zip").stat().st_size > 0

    with serving(tmp_path, KEY) as (_proc, url, _log), \
            httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as api:
        cli = ("--url", url)
        installed = json.loads(run("plugins", "install", "greeter.zip", *cli, "--json", cwd=work, env=env))
        assert (installed["id"], installed["status"]) == ("greeter", "installed")
        assert "active: default" in run("plugins", "sessions", "greeter", "default", *cli, cwd=work, env=env)
        enabled = json.loads(run("plugins", "enable", "greeter", *cli, "--json", cwd=work, env=env))
        assert enabled["status"] == "enabled" and enabled["warnings"] == []

        r = api.post("/api/sessions/default/messages", json={"chatId": "15550001111@c.us", "body": "ping"})
        assert r.status_code == 200, r.text
        assert [m["body"] for m in r.json()["sent"]] == ["pong"]
        sent = api.get("/api/sent", params={"session": "default"}).json()["sent"]
        assert [(m["body"], m["chatId"], m["sessionId"]) for m in sent] == [("pong", "15550001111@c.us", "default")]

        logs = run("plugins", "logs", "greeter", *cli, cwd=work, env=env)
        assert re.search(r"INFO +answered a ping chat='15550001111@c.us'", logs), logs

        metrics = api.get("/metrics").text
        assert 'plugbox_capability_calls_total{outcome="ok",plugin="greeter",verb="messages.send_text"} 1.0' \
            in metrics, [line for line in metrics.splitlines() if "greeter" in line]
        assert 'plugbox_plugins{status="enabled"} 1.0' in metrics
