"""The plugin author's kit: `plugbox new` scaffolds a plugin whose own tests pass, and
`plugbox.testing.run_plugin` runs a plugin confined and shows what it did."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from plugbox.testing import run_plugin

from .conftest import alive

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(120)


def test_new_plugin_scaffold_passes_its_own_tests_with_the_command_it_prints(tmp_path: Path) -> None:
    made = subprocess.run([str(BIN / "plugbox"), "new", "demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    command = made.stdout.split("run its tests with: ", 1)[1].strip()
    assert command == f"{BIN / 'plugbox'} test demo"
    # from a shell whose PATH has no virtualenv: the printed command must not rely on it
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    run = subprocess.run([*shlex.split(command), "-q"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout


def test_plugbox_test_fails_when_the_plugins_tests_fail(tmp_path: Path) -> None:
    subprocess.run([str(BIN / "plugbox"), "new", "demo", "--dir", str(tmp_path)], check=True,
                   capture_output=True, timeout=60)
    main = tmp_path / "demo" / "main.py"
    main.write_text(main.read_text().replace('"pong"', '"pang"'))
    run = subprocess.run([str(BIN / "plugbox"), "test", str(tmp_path / "demo"), "-q"],
                         capture_output=True, text=True, timeout=100)
    assert run.returncode == 1, run.stdout
    assert "1 failed" in run.stdout


def test_new_refuses_an_upper_case_name_naming_the_id_to_use(tmp_path: Path) -> None:
    made = subprocess.run([str(BIN / "plugbox"), "new", "MyBot", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 2
    assert "use 'mybot'" in made.stderr
    assert list(tmp_path.iterdir()) == []


def test_new_refuses_a_name_that_escapes_the_directory(tmp_path: Path) -> None:
    made = subprocess.run([str(BIN / "plugbox"), "new", "../escape", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 2
    assert "plugin name '../escape'" in made.stderr
    assert not (tmp_path.parent / "escape").exists()


async def test_run_plugin_shows_sent_messages_storage_and_logs() -> None:
    async with run_plugin(REPO / "examples" / "plugins" / "echo") as plugin:
        await plugin.inbound("hello")
        assert [m["body"] for m in plugin.sent] == ["echo: hello"]
        assert plugin.storage == {"echoed": 1}
        assert any("echoed" in line["message"] for line in plugin.logs)
        pid = plugin.worker_pid
        assert pid is not None and alive(pid)
    assert not alive(pid), "the worker must not outlive the harness"
