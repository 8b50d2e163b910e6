"""`plugbox serve` as an ordinary user (issue 15): every default layer applies, and two plugins'
workers run under two distinct subordinate uids — neither the host's nor each other's — so neither
can read the other's scratch nor signal the other.

Run by `.ci/run` as the unprivileged user it creates, with a venv built on the distribution's
Python, the user's /etc/subuid range and a cgroup subtree delegated to it (PLUGBOX_CGROUP_PARENT).
Under root (`make test`) there is nothing non-root to prove, so the module skips — unless
PLUGBOX_NONROOT_CI=1, which `.ci/run` sets, turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving import serving

REQUIRED = os.environ.get("PLUGBOX_NONROOT_CI") == "1"
if os.geteuid() == 0 and REQUIRED:
    raise RuntimeError("PLUGBOX_NONROOT_CI=1 but this runs as root: .ci/run must run it as its unprivileged user")
pytestmark = [pytest.mark.skipif(os.geteuid() == 0, reason="proves non-root operation; .ci/run runs it as a user"),
              pytest.mark.timeout(120)]

ADMIN = "nonroot-admin-key"
HEADERS = {"X-API-Key": ADMIN}
DEFAULT_LAYERS = {"session", "cgroups", "fds", "env", "rlimits", "userns", "scratch", "credentials", "nnp",
                  "landlock", "seccomp"}  # all but `namespaces`, which is opt-in

PROBE = '''
import json, os, signal
from plugbox.sdk import Plugin


def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__, "errno": getattr(exc, "errno", None)}


def read(path):
    with open(path) as f:
        return f.read()


class Probe(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)
        with open(os.path.join(os.environ["HOME"], "secret.txt"), "w") as f:
            f.write("secret of " + ctx.plugin_id)

    async def on_message(self, hook):
        me, body = self.ctx.plugin_id, hook.data["body"]
        if body == "whoami":
            out = {"id": me, "uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(),
                   "scratch": os.environ["HOME"], "own_secret": attempt(lambda: read("secret.txt"))}
        else:
            other = json.loads(body)[me]
            out = {"id": me,
                   "read_path": attempt(lambda: read(other["scratch"] + "/secret.txt")),
                   "read_proc_root": attempt(lambda: read(f"/proc/{other['pid']}/root{other['scratch']}/secret.txt")),
                   "signal_0": attempt(lambda: os.kill(other["pid"], 0)),
                   "sigkill": attempt(lambda: os.kill(other["pid"], signal.SIGKILL))}
        await self.ctx.messages.send_text(hook.session_id, hook.data["chatId"], json.dumps(out))
'''


def _plugin(base: Path, plugin_id: str) -> Path:
    path = base / plugin_id
    path.mkdir(mode=0o755)
    (path / "main.py").write_text(PROBE)
    (path / "manifest.json").write_text(json.dumps({
        "id": plugin_id, "name": plugin_id, "version": "1.0.0", "type": "extension", "main": "main.py",
        "sdkVersion": "1", "permissions": ["messages:send"], "hooks": ["message:received"]}))
    for item in (path, path / "main.py", path / "manifest.json"):
        item.chmod(0o755 if item.is_dir() else 0o644)  # the workers' uids are "other" to these files
    return path


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's 0700 tmp_path: the workers' subordinate uids must be able to reach the plugins.
    base = Path(tempfile.mkdtemp(prefix="plugbox-nonroot-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _say(c: httpx.Client, body: str) -> dict[str, dict[str, Any]]:
    r = c.post("/api/sessions/default/messages", json={"chatId": "15550001234@c.us", "body": body})
    assert r.status_code == 200, r.text
    replies = [json.loads(m["body"]) for m in r.json()["sent"]]
    return {reply["id"]: reply for reply in replies}


def _uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


def test_two_workers_run_under_distinct_subordinate_uids_and_cannot_reach_each_other(workdir: Path) -> None:
    plugins = {name: _plugin(workdir, name) for name in ("alpha", "beta")}
    host_uid = os.geteuid()
    settings = {"PLUGBOX_WORKER_UIDS": "required", "PLUGBOX_WORKER_CGROUPS": "required",
                "PLUGBOX_CGROUP_PARENT": os.environ.get("PLUGBOX_CGROUP_PARENT", "")}  # the delegated subtree
    run = workdir / "run"
    run.mkdir(mode=0o755)
    with serving(run, ADMIN, plugins, settings) as (proc, url, _log), \
            httpx.Client(base_url=url, headers=HEADERS, timeout=60) as c:
        assert _uids(proc.pid)[0] == host_uid != 0
        for name in plugins:
            assert c.put(f"/api/plugins/{name}/sessions", json={"activeSessions": ["default"]}).status_code == 200
            r = c.post(f"/api/plugins/{name}/enable")
            assert r.status_code == 200 and r.json()["status"] == "enabled", r.text
            layers = {layer["name"]: layer for layer in c.get(f"/api/plugins/{name}").json()["confinement"]}
            applied = {n for n, layer in layers.items() if layer["applied"]}
            assert applied == DEFAULT_LAYERS, {n: layers[n]["detail"] for n in DEFAULT_LAYERS - applied}
            print(name, {n: layers[n]["detail"][:100] for n in ("cgroups", "userns", "scratch", "credentials")})
        who = _say(c, "whoami")
        alpha, beta = who["alpha"], who["beta"]
        for me in (alpha, beta):
            assert me["own_secret"] == {"ok": True, "value": f"secret of {me['id']}"}
            assert _uids(me["pid"]) == [me["uid"]] * 4  # real, effective, saved, fs: as the worker sees it
            assert me["uid"] not in (0, host_uid)
        assert alpha["uid"] != beta["uid"] and alpha["gid"] != beta["gid"]
        print(f"host uid {host_uid}; alpha worker uid {alpha['uid']}, beta worker uid {beta['uid']}")

        targets = {"alpha": {"pid": beta["pid"], "scratch": beta["scratch"]},
                   "beta": {"pid": alpha["pid"], "scratch": alpha["scratch"]}}
        attacks = _say(c, json.dumps(targets))
        print("attacks:", json.dumps(attacks))
        for name, result in attacks.items():
            for attack in ("read_path", "read_proc_root", "signal_0", "sigkill"):
                assert result[attack]["ok"] is False, (name, attack, result[attack])
        assert {r["error"] for r in attacks.values() for r in (r["signal_0"], r["sigkill"])} == {"PermissionError"}
        again = _say(c, "whoami")  # both still alive, same processes
        assert {n: r["pid"] for n, r in again.items()} == {"alpha": alpha["pid"], "beta": beta["pid"]}
