"""Fixtures for integration tests: a real host (SQLite + loopback engine) and real confined
workers spawned through the project's own zygote."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.lifecycle.entry import PluginEntry
from plugbox.settings import load_settings

SESSION = "s1"

WritePlugin = Callable[..., Path]

# A plugin's handler that returns `value` as the carried data of a `webhook:before` payload.
CARRY = """
from plugbox.sdk import HookResult

def carry(hook, value):
    return HookResult(data={**hook.data, "payload": {**hook.data["payload"], "data": value}})
"""


def carrying(value: Any, session: str = SESSION) -> dict[str, Any]:
    """A `webhook:before` payload whose `payload.data` is `value`: the one free-form field of any
    hook payload, so the way a test passes arbitrary plain data through a chain and back."""
    return {"deliveryId": "d", "subscriptionId": "s", "event": "test",
            "payload": {"id": "d", "event": "test", "sessionId": session, "timestamp": "2026-01-01T00:00:00Z",
                        "data": value}}


@pytest.fixture
def write_plugin(tmp_path: Path) -> WritePlugin:
    """write_plugin(code, id="p", permissions=[...], **manifest) -> plugin dir."""

    def write(code: str, *, id: str = "p", permissions: list[str] | None = None, **manifest: Any) -> Path:
        root = tmp_path / "plugins" / id
        root.mkdir(parents=True)
        doc = {"id": id, "name": id, "version": "1.0.0", "type": "extension", "main": "main.py",
               "permissions": permissions if permissions is not None else ["messages:send", "storage:use"],
               **manifest}
        (root / "manifest.json").write_text(json.dumps(doc))
        (root / "main.py").write_text(textwrap.dedent(code))
        os.chmod(root, 0o755)
        return root

    return write


def host_settings(tmp_path: Path, **overrides: Any) -> Any:
    defaults: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "hook_budget_ms": 2000,
        "liveness_window_ms": 1000,
        "lifecycle_budget_ms": 10000,
        "restart_backoff_initial_ms": 50,
        "restart_backoff_max_ms": 200,
    }
    defaults.update(overrides)
    return load_settings(environ={}, **defaults)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def host(tmp_path: Path, settings_overrides: dict[str, Any]) -> AsyncIterator[Host]:
    engine = LoopbackEngine()
    h = Host(host_settings(tmp_path, **settings_overrides), engine=engine, bundled=False)
    await h.start(restore=False)
    await engine.create_session(SESSION)
    try:
        yield h
    finally:
        await h.stop()


async def enable(host: Host, plugin_dir: Path, sessions: tuple[str, ...] = (SESSION,)) -> PluginEntry:
    """Load and enable; returns the live entry (white-box: tests look at its runtime)."""
    plugin_id = host.load_plugin(plugin_dir).plugin_id
    await host.set_active_sessions(plugin_id, list(sessions))
    await host.enable(plugin_id)
    return host.manager.get(plugin_id)


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between open and read
        return False
    return state != "Z"


async def wait_for(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll `predicate` until true; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
