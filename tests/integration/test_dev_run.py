"""`plugbox dev run` through the real console script: the plugin author's loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGBOX = Path(sys.executable).parent / "plugbox"

pytestmark = pytest.mark.timeout(60)


def dev_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PLUGBOX), "dev", "run", *args], capture_output=True, text=True, timeout=50, cwd=REPO)


def test_dev_run_echo_reports_the_sent_echo_as_json() -> None:
    out = dev_run("examples/plugins/echo", "--event", "message:received",
                  "--data", '{"id":"m1","chatId":"c1","body":"hi"}', "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [m["body"] for m in report["sent"]] == ["echo: hi"]
    assert report["plugin"]["id"] == "echo" and report["plugin"]["status"] == "enabled"
    assert report["hook"] == {"continue": True, "data": {"id": "m1", "chatId": "c1", "body": "hi"},
                              "error": None, "timed_out": False}
    assert report["storage"] == {"echoed": 1}
    assert any("echoed" in line["message"] for line in report["logs"])
    layers = {layer["name"]: layer for layer in report["confinement"]}
    assert {"landlock", "seccomp", "rlimits", "nnp"} <= set(layers)
    assert all(layer["applied"] for layer in layers.values() if not layer.get("skipped"))


def test_dev_run_reports_a_broken_plugin_and_still_exits_zero(tmp_path: Path) -> None:
    plugin = tmp_path / "broken"
    plugin.mkdir()
    (plugin / "manifest.json").write_text(json.dumps(
        {"id": "broken", "name": "b", "version": "1", "type": "extension", "main": "main.py"}))
    (plugin / "main.py").write_text("raise RuntimeError('boom at import')\n")
    plugin.chmod(0o755)
    out = dev_run(str(plugin), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["plugin"]["status"] == "error"
    assert "boom at import" in report["plugin"]["error"]


def test_dev_run_rejects_bad_json_data_with_a_clear_error() -> None:
    out = dev_run("examples/plugins/echo", "--event", "message:received", "--data", "{nope")
    assert out.returncode == 2
    assert "--data is not valid JSON" in out.stderr
