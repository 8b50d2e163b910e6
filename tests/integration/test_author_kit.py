"""The plugin author's kit: `plugbox new` scaffolds a plugin whose own tests pass, and
`plugbox.testing.run_plugin` runs a plugin confined and shows what it did."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from plugbox.errors import ConfigError
from plugbox.testing import make_settings, run_plugin

from .conftest import alive

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(120)


def test_new_plugin_scaffold_passes_its_own_tests_with_the_command_it_prints(tmp_path: Path) -> None:
    # from a shell whose PATH has no virtualenv: the printed command must not rely on it
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    made = subprocess.run([str(BIN / "plugbox"), "new", "demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    command = made.stdout.split("run its tests with: ", 1)[1].strip()
    assert command == f"{BIN / 'plugbox'} test demo"
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


JSON_CLIENT = '''
from plugbox.sdk import Plugin

class Client(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook):
        result = await self.ctx.net.fetch(hook.data["body"], json=True)
        await self.ctx.storage.set("answer", result["json"]["answer"])
'''


async def test_run_plugin_settings_overrides_let_a_plugin_fetch_json_from_a_local_server(tmp_path: Path) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"answer": 42}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    (tmp_path / "manifest.json").write_text(json.dumps({
        "id": "client", "name": "client", "version": "1.0.0", "type": "extension", "main": "main.py",
        "permissions": ["net:fetch", "storage:use"], "net": {"allow": ["127.0.0.1"]}, "sessions": ["*"],
        "hooks": ["message:received"]}))
    (tmp_path / "main.py").write_text(JSON_CLIENT)
    try:
        async with run_plugin(tmp_path, settings={"fetch_exempt_hosts": ["127.0.0.1"]}) as plugin:
            await plugin.inbound(f"http://127.0.0.1:{port}/")
            assert plugin.storage == {"answer": 42}, plugin.logs
        async with run_plugin(tmp_path) as plugin:  # without the exemption, a local address is refused
            await plugin.inbound(f"http://127.0.0.1:{port}/")
            assert plugin.storage == {}
    finally:
        server.close()
        await server.wait_closed()


def test_make_settings_ignores_the_environment_and_names_bad_fields(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUGBOX_HOOK_BUDGET_MS", "1")
    settings = make_settings(tmp_path, fetch_exempt_hosts=("localhost",))
    assert settings.fetch_exempt_hosts == ("localhost",)
    assert settings.hook_budget_ms != 1
    with pytest.raises(ConfigError, match="fetch_timeout_ms"):
        make_settings(tmp_path, fetch_timeout_ms="soon")
