"""Fixtures for the hostile-plugin suite: a real host whose untrusted plugins run as real confined
workers (zygote, full strict confinement), with canaries planted where an attack would find them.

Every hostile test follows one shape (see `Attack`):

1. plant canaries (`canary`: a secret string in the host data dir, the host's environment, a fake
   home, another plugin's rows in the host's SQLite database; `listeners`: loopback TCP and UDP,
   a unix socket in a temp dir, an abstract unix socket — each records whoever reaches it);
2. run the hostile code in a real worker: the plugin writes `started` to its storage *before* the
   attack, then the attack's outcome (`{"ran": True, "ok": ..., "type": ..., "errno": ...}`) —
   storage is a channel the host controls, so a test can tell "refused" from "never ran";
3. assert the attack failed the expected way, that the canary appears nowhere the plugin can
   write (its storage, its relayed logs, the hook result) and that no listener was reached;
4. `aftermath`: the host is alive and serving (the zygote lives, the bus dispatches, a fresh
   benign worker answers a hook round trip) and no stray process remains (every process in the
   zygote's family is the live worker of an enabled plugin).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugbox.api import create_app
from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.lifecycle import Status
from plugbox.lifecycle.entry import PluginEntry
from tests.integration.conftest import (
    CARRY,
    SESSION,
    WritePlugin,
    alive,
    carrying,
    enable,
    host_settings,
    settings_overrides,
    wait_for,
    write_plugin,
)

__all__ = [
    "SESSION",
    "Attack",
    "Canary",
    "Listeners",
    "WritePlugin",
    "alive",
    "assert_refused",
    "enable",
    "reported",
    "settings_overrides",
    "wait_for",
    "write_plugin",
]

CANARY_ENV = "PLUGBOX_SECURITY_CANARY"


# -- canaries -------------------------------------------------------------------------------------


@dataclass
class Canary:
    secret: str
    data_file: Path
    home: Path
    home_file: Path
    db_path: Path


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Canary:
    """A unique secret, planted before the host starts: in the host's environment (so the host
    process, and anything that would inherit from it, holds it) and in a fake home."""
    secret = "canary-" + uuid.uuid4().hex
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    home_file = home / ".ssh" / "id_ed25519"
    home_file.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{secret}\n")
    monkeypatch.setenv(CANARY_ENV, secret)
    monkeypatch.setenv("HOME", str(home))
    data = tmp_path / "data"
    return Canary(secret, data / "host-secret.txt", home, home_file, data / "plugbox.db")


@pytest.fixture
async def host(tmp_path: Path, settings_overrides: dict[str, Any], canary: Canary) -> AsyncIterator[Host]:
    """A started host (SQLite + loopback engine, strict confinement) with the canary planted in
    its data dir and in another plugin's storage rows; every worker pid it spawns is recorded in
    `host.spawned_pids` (for the stray-process check)."""
    engine = LoopbackEngine()
    h = Host(host_settings(tmp_path, **settings_overrides), engine=engine, bundled=False)
    spawned: list[int] = []
    real_spawn = h.zygote.spawn

    async def recording_spawn(*args: Any) -> Any:
        proc = await real_spawn(*args)
        spawned.append(proc.pid)
        return proc

    h.zygote.spawn = recording_spawn  # type: ignore[method-assign]
    h.spawned_pids = spawned  # type: ignore[attr-defined]
    await h.start(restore=False)
    await h.zygote.ensure_started()  # started lazily otherwise; attacks need its pid
    await engine.create_session(SESSION)
    assert h.settings.data_path == canary.data_file.parent
    canary.data_file.write_text(canary.secret)
    await h.storage.set("victim", "token", canary.secret)  # another plugin's data, in the host db
    try:
        yield h
    finally:
        await h.stop()


# -- listeners ------------------------------------------------------------------------------------


@dataclass
class Listeners:
    tcp_port: int
    udp_port: int
    unix_path: str
    unix_dgram_path: str
    abstract_name: str  # without the leading NUL
    hits: list[str] = field(default_factory=list)

    def as_config(self) -> dict[str, Any]:
        return {"tcp_port": self.tcp_port, "udp_port": self.udp_port, "unix_path": self.unix_path,
                "unix_dgram_path": self.unix_dgram_path, "abstract_name": self.abstract_name}


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, hits: list[str], what: str) -> None:
        self.hits, self.what = hits, what

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.hits.append(f"{self.what}: {data[:64]!r}")


@pytest.fixture
async def client(host: Host) -> AsyncIterator[httpx.AsyncClient]:
    """The host's HTTP API, in process (ASGI), as an operator or a sender reaches it."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(host)), base_url="http://t") as c:
        yield c


@pytest.fixture
async def listeners() -> AsyncIterator[Listeners]:
    """Host-side listeners a plugin must not reach: loopback TCP and UDP, a unix stream and a unix
    datagram socket on disk, an abstract unix socket. Every connection or datagram is recorded."""
    loop = asyncio.get_running_loop()
    hits: list[str] = []
    servers: list[asyncio.AbstractServer] = []
    closers: list[Any] = []

    def on_connect(what: str) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            hits.append(what)
            writer.close()

        return handle

    tcp = await asyncio.start_server(on_connect("tcp"), "127.0.0.1", 0)
    servers.append(tcp)
    tcp_port = tcp.sockets[0].getsockname()[1]
    udp_transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(hits, "udp"), local_addr=("127.0.0.1", 0))
    closers.append(udp_transport)
    udp_port = udp_transport.get_extra_info("sockname")[1]
    # Under /tmp with a 0755 dir, so that only confinement (not plain permissions) keeps a worker out.
    base = tempfile.mkdtemp(prefix="plugbox-hostile-", dir="/tmp")
    os.chmod(base, 0o755)
    unix_path = os.path.join(base, "host.sock")
    unix = await asyncio.start_unix_server(on_connect("unix"), unix_path)
    os.chmod(unix_path, 0o777)
    servers.append(unix)
    dgram_path = os.path.join(base, "host-dgram.sock")
    dgram_transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(hits, "unix-dgram"), local_addr=dgram_path,
                                                             family=socket.AF_UNIX)
    os.chmod(dgram_path, 0o777)
    closers.append(dgram_transport)
    abstract_name = "plugbox-hostile-" + uuid.uuid4().hex
    abstract_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_sock.bind(b"\0" + abstract_name.encode())
    abstract = await asyncio.start_unix_server(on_connect("abstract"), sock=abstract_sock)
    servers.append(abstract)
    try:
        yield Listeners(tcp_port, udp_port, unix_path, dgram_path, abstract_name, hits)
    finally:
        for server in servers:
            server.close()
        for transport in closers:
            transport.close()
        for server in servers:
            await server.wait_closed()
        for name in os.listdir(base):
            os.unlink(os.path.join(base, name))
        os.rmdir(base)


# -- processes ------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, int, str] | None:
    """(ppid, pgrp, session, state) of `pid`, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[1]), int(fields[2]), int(fields[3]), fields[0]


def family(host: Host) -> set[int]:
    """Every process (zombies included) that is a child of the zygote, or a child of, in the
    session of, or in the process group of any worker this host ever started."""
    zygote = host.zygote.pid
    workers = set(host.spawned_pids)  # type: ignore[attr-defined]
    out: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st is None:
            continue
        ppid, pgrp, sid, _state = st
        if ppid == zygote or ppid in workers or sid in workers or pgrp in workers:
            out.add(int(name))
    return out


def live_workers(host: Host) -> set[int]:
    """Pids of the workers of plugins that are currently enabled."""
    pids: set[int] = set()
    for view in host.plugins():
        if view.worker_pid is not None and view.status == Status.ENABLED and alive(view.worker_pid):
            pids.add(view.worker_pid)
    return pids


# -- the hostile plugin ---------------------------------------------------------------------------

HOSTILE = '''
import asyncio, inspect, json, os, sys
from plugbox.sdk import Plugin, HookResult

CFG = json.loads({cfg!r})

{helpers}

{code}


def _plain(value):
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


def _failure(exc):
    return {{"ran": True, "ok": False, "type": type(exc).__name__,
            "errno": getattr(exc, "errno", None), "error": (type(exc).__name__ + ": " + str(exc))[:2000]}}


class Hostile(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("webhook:before", self.on_message)

    async def on_enable(self, ctx):
        if {in_enable!r}:
            await self.run(ctx)

    async def on_message(self, hook):
        outcome = await self.run(self.ctx)
        # the outcome comes back in webhook:before's free-form payload.data (tests read it with `reported`)
        return HookResult(data={{**hook.data, "payload": {{**hook.data["payload"],
                                                          "data": {{"id": "m", "outcome": outcome}}}}}})

    async def run(self, ctx):
        await _report(ctx, "started", True)
        try:
            value = attack(ctx, CFG)
            if inspect.isawaitable(value):
                value = await value
            outcome = {{"ran": True, "ok": True, "value": _plain(value)}}
        except BaseException as exc:  # MemoryError, SystemExit... all are outcomes here
            outcome = _failure(exc)
        await _report(ctx, "result", outcome)
        return outcome


async def _report(ctx, key, value):
    """Through storage when the plugin has it; a plugin without storage:use reports in its hook result."""
    from plugbox.sdk import CapabilityError
    try:
        await ctx.storage.set(key, value)
    except CapabilityError:
        pass
'''

HELPERS = '''
import ctypes, errno
import msgspec

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def syscall(nr, *args):
    """A raw syscall; OSError with the real errno on failure."""
    res = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def channel_fd(ctx):
    """The worker's channel to the host (the fd its server's transport reads)."""
    return ctx._backend._server.transport.get_extra_info("socket").fileno()


def _is_socket(fd):
    import stat
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def frame(body):
    """One bridge frame: a 4-byte big-endian length, then the body."""
    import struct
    return struct.pack("!I", len(body)) + body


def raw_send(ctx, data):
    """Write bytes straight onto the channel, bypassing the SDK and its frame writer."""
    import select
    fd = channel_fd(ctx)
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
'''


class AttackRun:
    def __init__(self, entry: PluginEntry, pid: int, host: Host) -> None:
        self.entry = entry
        self.pid = pid  # the worker that ran the attack
        self._host = host

    @property
    def result(self) -> dict[str, Any]:
        found, value = self.entry_storage("result")
        assert found, f"the hostile plugin never reported (status {self.entry.status}, error {self.entry.error})"
        assert isinstance(value, dict) and value.get("ran") is True, value
        return value

    def entry_storage(self, key: str) -> tuple[bool, Any]:
        return self._host.storage.get(self.entry.plugin_id, key)


class Attack:
    """Writes, enables and drives hostile plugins; checks the aftermath."""

    def __init__(self, host: Host, write_plugin: WritePlugin, canary: Canary) -> None:
        self.host = host
        self.write_plugin = write_plugin
        self.canary = canary
        self.hook_outcomes: list[Any] = []
        self._benign = 0

    def plugin(self, code: str, cfg: dict[str, Any] | None = None, *, id: str = "hostile", in_enable: bool = True,
               permissions: list[str] | None = None, **manifest: Any) -> Path:
        source = HOSTILE.format(cfg=json.dumps(cfg or {}), helpers=HELPERS, code=textwrap.dedent(code),
                                in_enable=in_enable)
        # hooks:modify so that the handler's answer (its outcome) reaches the test
        perms = [*(["storage:use"] if permissions is None else permissions), "hooks:modify"]
        return self.write_plugin(source, id=id, permissions=perms, **manifest)

    async def run(self, code: str, cfg: dict[str, Any] | None = None, **kw: Any) -> AttackRun:
        """The attack in on_enable; the plugin must come up enabled."""
        return await self.start(self.plugin(code, cfg, **kw))

    async def start(self, plugin_dir: Path) -> AttackRun:
        """Enable a plugin written by `plugin` (and perhaps doctored by the test)."""
        entry = await enable(self.host, plugin_dir)
        assert entry.status == Status.ENABLED, entry.error
        return AttackRun(entry, entry.runtime.proc.pid, self.host)  # type: ignore[union-attr]

    async def run_in_hook(self, code: str, cfg: dict[str, Any] | None = None, **kw: Any) -> tuple[AttackRun, Any]:
        """The attack in a hook handler; returns the run and the bus outcome (`reported` reads it)."""
        entry = await enable(self.host, self.plugin(code, cfg, in_enable=False, **kw))
        assert entry.status == Status.ENABLED, entry.error
        pid = entry.runtime.proc.pid  # type: ignore[union-attr]
        outcome = await self.fire("m1")
        return AttackRun(entry, pid, self.host), outcome

    async def fire(self, message_id: str = "m2", session: str = SESSION) -> Any:
        """Fire the event the hostile handler serves once more; the bus outcome (`reported` reads it)."""
        outcome = await self.host.dispatch("webhook:before", carrying({"id": message_id}, session), session)
        self.hook_outcomes.append(outcome)
        return outcome

    # -- the four checks every hostile test makes --

    def assert_no_leak(self, run: AttackRun, *extra: Any) -> None:
        """The canary is nowhere the plugin could have put it: its storage, its relayed logs, the
        hook results, nor in `extra`."""
        secret = self.canary.secret
        host, pid = self.host, run.entry.plugin_id
        stored = {key: host.storage.get(pid, key)[1] for key in host.storage.list(pid)}
        logs = [line["message"] for line in run.entry.logs.recent]
        hooks = [(o.data, o.errors) for o in self.hook_outcomes]
        for where, blob in (("storage", stored), ("logs", logs), ("hook results", hooks), ("extra", extra)):
            assert secret not in repr(blob), f"the canary leaked into the plugin's {where}"

    async def aftermath(self, *, listeners: Listeners | None = None) -> None:
        """The host is alive and serving, no listener was reached, and no stray process remains."""
        host = self.host
        if listeners is not None:
            await asyncio.sleep(0.05)  # let a connection that did get through be accepted
            assert listeners.hits == [], f"a host listener was reached: {listeners.hits}"
        assert host.zygote.alive, "the zygote died"
        started = time.monotonic()
        await host.dispatch("session:ready", {}, SESSION)
        assert time.monotonic() - started < 5
        await host.storage.set("aftermath", "probe", 1)
        assert host.storage.get("aftermath", "probe") == (True, 1)
        await self.benign_round_trip()
        await self.assert_no_strays()

    async def benign_round_trip(self) -> None:
        """A fresh benign worker is spawned, answers a hook, and is stopped."""
        self._benign += 1
        pid = f"benign-{self._benign}"
        entry = await enable(self.host, self.write_plugin(CARRY + textwrap.dedent("""
            from plugbox.sdk import Plugin
            class Benign(Plugin):
                def on_load(self, ctx):
                    ctx.register_hook("webhook:before", self.ready)
                def ready(self, hook):
                    return carry(hook, {"benign": "pong"})
        """), id=pid, permissions=["hooks:modify"]))
        assert entry.status == Status.ENABLED, entry.error
        outcome = await self.host.dispatch("webhook:before", carrying({"id": "m0"}), SESSION)
        assert reported(outcome) == {"benign": "pong"}
        await self.host.disable(pid)

    async def assert_no_strays(self, within: float = 5.0) -> None:
        """Every process in the zygote's family is the live worker of an enabled plugin."""
        deadline = time.monotonic() + within
        while True:
            extra = family(self.host) - live_workers(self.host)
            if not extra:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"stray processes remain: {_describe(extra)}")
            await asyncio.sleep(0.05)


def reported(outcome: Any) -> dict[str, Any]:
    """What the chain left in the carried data: the hostile handler's `{"id", "outcome"}` when it
    answered, the test's own `{"id"}` when the hook resolved to continue."""
    data: dict[str, Any] = outcome.data["payload"]["data"]
    return data


def _describe(pids: set[int]) -> list[str]:
    out = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = "?"
        out.append(f"{pid} {_stat(pid)} {cmd}")
    return out


@pytest.fixture
def attack(host: Host, write_plugin: WritePlugin, canary: Canary) -> Iterator[Attack]:
    yield Attack(host, write_plugin, canary)


def assert_refused(result: dict[str, Any], *errnos: int, types: tuple[str, ...] = ()) -> None:
    """The attack ran and failed with one of `errnos` (or, if given, an exception of one of `types`)."""
    assert result.get("ran") is True, result
    assert result.get("ok") is False, f"the attack SUCCEEDED: {result}"
    if types and result.get("type") in types:
        return
    assert result.get("errno") in errnos, f"expected errno {errnos} / {types}, got {result}"
