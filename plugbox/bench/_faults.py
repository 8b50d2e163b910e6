"""The faults of the chaos scenario (see `plugbox.bench.chaos`): the plugin every chaos and soak
worker runs (CHAOS_PLUGIN, which stores acknowledged writes and misbehaves on request) and the
injector that signals a random running worker or asks its plugin to flood logs or write garbage.
Owns no load, no report; bench-only, never imported by the host."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import signal
from typing import Any

from plugbox.bench._plugins import CARRY
from plugbox.bench._proc import alive
from plugbox.host import Host
from plugbox.lifecycle import Status

WRITE_EVENT = "webhook:before"  # never fired by the loopback engine itself; its payload.data is free-form
FAULT_EVENT = "message:deleted"
FAULT_KINDS = ("sigkill", "sigstop_cont", "sigstop_leave", "log_flood", "garbage")
FLOOD_LINES = 5000

# The plugin every chaos and soak worker runs. `fault` only ever runs when the injector asks.
CHAOS_PLUGIN = CARRY + f'''
import gc
import os
import stat
import time

from plugbox.sdk import HookResult, Plugin


def channel_fd():
    for obj in gc.get_objects():
        if type(obj).__name__ == "WorkerServer" and obj.transport is not None:
            return obj.transport.get_extra_info("socket").fileno()
    return next(fd for fd in range(1024) if _is_socket(fd))


def _is_socket(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            time.sleep(0.001)


class Chaos(Plugin):
    def on_load(self, ctx):
        ctx.register_hook({WRITE_EVENT!r}, self.write)
        ctx.register_hook({FAULT_EVENT!r}, self.fault)

    async def write(self, hook):
        asked = hook.data["payload"]["data"]
        key, value = asked["key"], asked["value"]
        await self.ctx.storage.set(key, value)
        return carry(hook, {{"ack": key, "value": value}})

    def fault(self, hook):
        if hook.data.get("cmd") == "flood":
            for i in range(hook.data["n"]):
                self.ctx.logger.info("flood line %d" % i)
        elif hook.data.get("cmd") == "garbage":
            fd = channel_fd()
            for _ in range(1000):
                write_all(fd, b"\\x00\\x00\\x00\\x01\\xc1")  # a 1-byte frame that never decodes
            time.sleep(10)
        return None
'''


def session_of(index: int) -> str:
    return f"chaos-{index:03d}"


class _Injector:
    def __init__(self, host: Host, ids: list[str], every_s: float, cont_max_s: float, rng: random.Random) -> None:
        self.host = host
        self.ids = ids
        self.every_s = every_s
        self.cont_max_s = cont_max_s
        self.rng = rng
        self.injected: collections.Counter[str] = collections.Counter()
        self.stopped: dict[int, Any] = {}  # pid -> WorkerProcess (signalled through its pidfd)
        self.left_stopped: set[int] = set()
        self.side_tasks: set[asyncio.Task[Any]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        kinds = itertools.cycle(FAULT_KINDS)  # every kind, evenly
        while not stop.is_set():
            self.inject(next(kinds))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)

    def _target(self) -> tuple[int, str, Any] | None:
        candidates = []
        for i, plugin_id in enumerate(self.ids):
            # White-box on purpose: faults are signalled through the worker's pidfd, which only
            # its runtime holds (a pid alone could be recycled between choice and signal).
            entry = self.host.manager.get(plugin_id)
            proc = getattr(entry.runtime, "proc", None)
            if entry.status == Status.ENABLED and proc is not None and proc.pid not in self.stopped:
                candidates.append((i, plugin_id, proc))
        return self.rng.choice(candidates) if candidates else None

    def inject(self, kind: str) -> None:
        target = self._target()
        if target is None:
            return
        index, _plugin_id, proc = target
        self.injected[kind] += 1
        if kind == "sigkill":
            proc.kill()
        elif kind in ("sigstop_cont", "sigstop_leave"):
            proc.signal(signal.SIGSTOP)
            self.stopped[proc.pid] = proc
            if kind == "sigstop_cont":
                asyncio.get_running_loop().call_later(self.rng.uniform(0.05, self.cont_max_s), self._cont, proc)
            else:
                self.left_stopped.add(proc.pid)
        else:
            data = {"cmd": "flood", "n": FLOOD_LINES} if kind == "log_flood" else {"cmd": "garbage"}
            task = asyncio.ensure_future(self.host.bus.execute(FAULT_EVENT, data, session_of(index)))
            self.side_tasks.add(task)
            task.add_done_callback(self.side_tasks.discard)

    def _cont(self, proc: Any) -> None:
        proc.signal(signal.SIGCONT)
        self.stopped.pop(proc.pid, None)

    def release(self) -> int:
        """SIGCONT whatever is still stopped; returns how many were left stopped and still alive."""
        still = 0
        for pid, proc in self.stopped.items():
            if alive(pid):
                still += pid in self.left_stopped
                proc.signal(signal.SIGCONT)  # a no-op once its runtime closed the pidfd
        self.stopped.clear()
        return still
