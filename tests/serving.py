"""A real `plugbox serve` in a subprocess, for the black-box and browser tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

__all__ = ["descendants", "free_port", "serving"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def descendants(pid: int) -> set[int]:
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


@contextlib.contextmanager
def serving(
    tmp_path: Path, admin_key: str, plugins: dict[str, Path] | None = None, settings: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`plugbox serve` on a free port, with a temp data dir, `plugins` copied into its plugins dir and
    `settings` (PLUGBOX_* variables) on top of the defaults."""
    plugins_dir = tmp_path / "plugins"
    for name, src in (plugins or {}).items():
        shutil.copytree(src, plugins_dir / name)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOX_")}
    env.update({"PLUGBOX_DATA_DIR": str(tmp_path / "data"), "PLUGBOX_PLUGINS_DIR": str(plugins_dir),
                "PLUGBOX_ADMIN_API_KEYS": admin_key, **(settings or {})})
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
