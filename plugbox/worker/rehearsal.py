"""A worker's first conversation, rehearsed once in the zygote before it forks any worker.

Why: a forked worker shares the zygote's memory only until it writes to it. What the worker
computes and caches the first time it takes a path (msgspec's per-type decoding plans, uvloop and
asyncio internals, importlib's finders, interned strings, the plugin SDK's objects) is written into
pages of its own, in every worker. Taken once here, those caches are in the zygote's heap before
`gc.freeze()` and the fork, and every worker shares them. The bench's memory phase measures what
this gives (docs/performance.md).

What it runs: the real worker server (plugbox.worker.server) on a socketpair, with our own
rehearsal plugin (rehearsal_plugin/main.py, never a user's), through hello, load, on_load,
on_enable, one hook, a ping, health and shutdown, played by a scripted host side in this module;
and `confine.prepare` of a policy (no side effects; `apply` is never called here, the zygote
itself is not confined). Everything it changes in the interpreter (sys.stdout, sys.stderr,
sys.path, sys.modules) is put back. A rehearsal that fails is reported to the caller and costs
nothing else: workers then only start a little heavier.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plugbox import confine
from plugbox.protocol import (
    FrameReader,
    Health,
    Hello,
    Hook,
    Lifecycle,
    Load,
    Ping,
    Pong,
    Result,
    Shutdown,
    WorkerMsg,
    encode_frame,
)
from plugbox.worker.server import serve

__all__ = ["rehearse"]

PLUGIN_DIR = Path(__file__).parent / "rehearsal_plugin"
BUDGET_S = 10.0  # the whole rehearsal; it takes a few milliseconds
_MAX_FRAME = 1 << 20


class _Host:
    """The host's side of the rehearsal: send one request, read frames until its answer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader(WorkerMsg, _MAX_FRAME)
        self.seen: list[Any] = []

    async def next(self, kind: type, request_id: int | None = None) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            for i, msg in enumerate(self.seen):
                if type(msg) is kind and (request_id is None or getattr(msg, "id", None) == request_id):
                    return self.seen.pop(i)
            data = await loop.sock_recv(self.sock, 65536)
            if not data:
                raise ConnectionError(f"the rehearsed worker closed before sending {kind.__name__}")
            self.seen.extend(self.reader.feed(data))

    async def ask(self, msg: Any) -> Any:
        await asyncio.get_running_loop().sock_sendall(self.sock, bytes(encode_frame(msg)))
        answer = await self.next(Pong if type(msg) is Ping else Result, msg.id)
        if type(answer) is Result and not answer.ok:
            raise RuntimeError(f"rehearsal: {type(msg).__name__} failed: {answer.error}")
        return answer


async def _conversation(host_end: socket.socket, worker_end: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    worker = loop.create_task(serve(worker_end, [], None, _MAX_FRAME))
    host = _Host(host_end)
    try:
        await host.next(Hello)
        await host.ask(Load(1, "rehearsal", str(PLUGIN_DIR), "main.py", {}, [], False))
        await host.ask(Lifecycle(2, "on_load"))
        await host.ask(Lifecycle(3, "on_enable"))
        data = {"sessionId": "s", "input": {"chatId": "1@c.us", "text": "hi"}, "type": "text"}
        await host.ask(Hook(4, 0, "message:sending", data, "s", datetime.now(UTC), "host", {}))
        await host.ask(Ping(5))
        await host.ask(Health(6))
        await loop.sock_sendall(host_end, bytes(encode_frame(Shutdown())))
        await worker
    finally:
        worker.cancel()


def _prepare_a_policy(shared: Any) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        confine.prepare(confine.Policy(keep_fds=(3,), scratch_dir=scratch, plugin_dir=str(PLUGIN_DIR)), shared)


def rehearse(shared: Any, new_loop: Any) -> str | None:
    """Rehearse (module docstring); `new_loop()` makes the kind of event loop workers run.
    Returns None, or why the rehearsal failed."""
    saved = sys.stdout, sys.stderr, list(sys.path), set(sys.modules)
    loop = new_loop()
    host_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    host_end.setblocking(False)
    try:
        _prepare_a_policy(shared)
        loop.run_until_complete(asyncio.wait_for(_conversation(host_end, worker_end), BUDGET_S))
        return None
    except Exception as exc:  # reported; a zygote without a rehearsal still works
        return f"{type(exc).__name__}: {exc}"
    finally:
        loop.close()
        host_end.close()
        worker_end.close()  # (a no-op once the worker's transport has closed it)
        sys.stdout, sys.stderr, sys.path[:] = saved[0], saved[1], saved[2]
        for name in set(sys.modules) - saved[3]:
            if name.startswith("plugbox_plugin_"):
                del sys.modules[name]
