"""`plugbox dev run` through the real console script: the plugin author's loop, its report and its
exit codes (SPEC §9: 0 loaded and ran, 1 could not load or enable, 2 usage, 3 the host failed;
with `--json` one JSON object on stdout whatever the exit code)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGBOX = Path(sys.executable).parent / "plugbox"

pytestmark = pytest.mark.timeout(60)


def dev_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PLUGBOX), "dev", "run", *args], capture_output=True, text=True, timeout=50, cwd=REPO)


def test_dev_run_echo_reports_the_sent_echo_as_json() -> None:
    out = dev_run("examples/plugins/echo", "--event", "message:received",
                  "--data", '{"chatId":"c1","body":"hi"}', "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["exit_code"] == 0 and report["reason"] is None
    assert [m["body"] for m in report["sent"]] == ["echo: hi"]
    assert report["plugin"]["id"] == "echo" and report["plugin"]["status"] == "enabled"
    hook = report["hook"]
    assert hook["continue"] is True and hook["error"] is None and hook["timed_out"] is False
    assert hook["data"]["chatId"] == "c1" and hook["data"]["body"] == "hi"
    assert hook["data"]["id"].startswith("lb-dev-")  # stored in the loopback engine first
    assert report["storage"] == {"echoed": 1}
    assert any("echoed" in line["message"] for line in report["logs"])
    layers = {layer["name"]: layer for layer in report["confinement"]}
    assert {"landlock", "seccomp", "rlimits", "nnp"} <= set(layers)
    assert all(layer["applied"] for layer in layers.values() if not layer.get("skipped"))


def write(tmp_path: Path, main: str, **manifest: object) -> Path:
    plugin = tmp_path / "p"
    plugin.mkdir()
    (plugin / "manifest.json").write_text(json.dumps(
        {"id": "p", "name": "p", "version": "1", "type": "extension", "main": "main.py", **manifest}))
    (plugin / "main.py").write_text(textwrap.dedent(main))
    plugin.chmod(0o755)
    return plugin


def report_of(out: subprocess.CompletedProcess[str], code: int) -> dict[str, Any]:
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    report: dict[str, Any] = json.loads(out.stdout)  # one JSON object, whatever the exit code
    assert report["exit_code"] == code
    return report


def test_a_plugin_failing_at_import_exits_1_and_says_why(tmp_path: Path) -> None:
    report = report_of(dev_run(str(write(tmp_path, "raise RuntimeError('boom at import')\n")), "--json"), 1)
    assert report["plugin"]["status"] == "error"
    assert "boom at import" in report["plugin"]["error"] and "could not be enabled" in report["reason"]


def test_a_failing_on_load_exits_1(tmp_path: Path) -> None:
    plugin = write(tmp_path, """
        from plugbox.sdk import Plugin
        class P(Plugin):
            async def on_load(self, ctx):
                raise ValueError("no config")
    """)
    report = report_of(dev_run(str(plugin), "--json"), 1)
    assert "on_load raised" in report["reason"] and "ValueError: no config" in report["reason"]


@pytest.mark.parametrize(("case", "expected"), [("missing", "manifest"), ("malformed", "not valid JSON")])
def test_a_missing_or_malformed_plugin_exits_1(tmp_path: Path, case: str, expected: str) -> None:
    plugin = tmp_path / "nothing-here"
    if case == "malformed":
        plugin = write(tmp_path, "")
        (plugin / "manifest.json").write_text("{oops")
    report = report_of(dev_run(str(plugin), "--json"), 1)
    assert "could not be loaded" in report["reason"] and expected in report["reason"], report["reason"]


def test_an_unknown_event_is_a_usage_error_before_anything_runs() -> None:
    report = report_of(dev_run("examples/plugins/echo", "--event", "message:recieved", "--json"), 2)
    assert "unknown event 'message:recieved'" in report["reason"]
    assert report["plugin"]["id"] is None and report["sent"] == []
    out = dev_run("examples/plugins/echo", "--event", "nope")
    assert out.returncode == 2 and "unknown event 'nope'" in out.stderr


def test_bad_json_data_is_a_usage_error_with_a_json_report() -> None:
    report = report_of(dev_run("examples/plugins/echo", "--event", "message:received", "--data", "{nope", "--json"), 2)
    assert "--data is not valid JSON" in report["reason"]
    out = dev_run("examples/plugins/echo", "--event", "message:received", "--data", "{nope")
    assert out.returncode == 2 and "--data is not valid JSON" in out.stderr


def test_a_host_that_cannot_start_exits_3(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    report = report_of(dev_run("examples/plugins/echo", "--data-dir", str(not_a_dir), "--json"), 3)
    assert report["reason"].startswith("the host failed")


def test_a_hook_that_fails_still_exits_0(tmp_path: Path) -> None:
    plugin = write(tmp_path, """
        from plugbox.sdk import Plugin
        class P(Plugin):
            async def on_load(self, ctx):
                ctx.register_hook("session:ready", self.on_ready)
            async def on_ready(self, hook):
                raise RuntimeError("handler broke")
    """)
    report = report_of(dev_run(str(plugin), "--event", "session:ready", "--data", "{}", "--json"), 0)
    assert "handler broke" in report["hook"]["error"]


def test_a_reply_to_the_dispatched_message_works_and_large_values_are_summarised(tmp_path: Path) -> None:
    plugin = write(tmp_path, """
        from plugbox.sdk import Plugin
        class P(Plugin):
            async def on_load(self, ctx):
                ctx.register_hook("message:received", self.on_message)
            async def on_message(self, hook):
                m = hook.data
                await self.ctx.messages.reply(hook.session_id, m["chatId"], m["id"], "got it")
                await self.ctx.storage.set("big", "x" * 200_000)
                await self.ctx.storage.set("small", {"n": 1})
    """, permissions=["messages:send", "storage:use"])
    report = report_of(dev_run(str(plugin), "--event", "message:received",
                               "--data", '{"chatId": "15550001111@c.us", "body": "hi"}', "--json"), 0)
    assert report["hook"]["error"] is None, report
    assert [(m["body"], m["quotedId"]) for m in report["sent"]] == [("got it", report["hook"]["data"]["id"])]
    assert report["storage"]["small"] == {"n": 1}
    big = report["storage"]["big"]
    assert isinstance(big, str) and len(big) < 300 and "200002 characters" in big


def test_dev_run_watch_runs_again_with_the_changed_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher is replaced by a change the test makes itself: after the first run it edits
    main.py and reports the batch, as watchfiles would; the second run loads the new code."""
    from typer.testing import CliRunner

    import plugbox.devwatch
    from plugbox.cli import app

    plugin = write(tmp_path, """
        from plugbox.sdk import Plugin

        class P(Plugin):
            async def on_load(self, ctx):
                ctx.logger.info("version one")
        """)
    main = plugin / "main.py"

    def one_edit(plugin_dir: Path) -> Any:
        assert plugin_dir == plugin
        main.write_text(main.read_text().replace("version one", "version two"))
        yield {str(main)}

    monkeypatch.setattr(plugbox.devwatch, "plugin_changes", one_edit)
    out = CliRunner().invoke(app, ["dev", "run", str(plugin), "--watch", "--json"])
    assert out.exit_code == 0, out.output
    reports = [json.loads(line) for line in out.stdout.splitlines()]
    assert [[line["message"] for line in r["logs"]] for r in reports] == [["version one"], ["version two"]]
    assert f"watching {plugin}" in out.stderr and "changed: main.py; running again" in out.stderr
