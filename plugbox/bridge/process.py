"""Worker processes, host side: start the zygote, ask it for workers, kill them, learn how they
ended. Apart from the protocol on purpose: this module knows pids and fds, not frames.

Workers are children of the zygote, not of the host. The host holds a pidfd for each, so a kill
can never hit a recycled pid, and learns the exit status from the zygote, which reaps them.
Chain of custody when the host dies, even by SIGKILL: host → zygote (PR_SET_PDEATHSIG) → workers
(PR_SET_PDEATHSIG, set after their credentials are final).

How a worker ended (`Ending`) is its wait status plus what the zygote found in its cgroup before
removing it: the kernel's OOM kills there and whose memory limit was reached, its own or that of all
workers together. A kernel OOM kill is a SIGKILL like any other in the wait status; only the group's
counters tell it apart, so the plugin's failure can say "out of memory" instead of "killed".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field

import msgspec

from plugbox.errors import BridgeError
from plugbox.protocol import MAX_CONTROL_MSG, CgroupLimits, Exited, Failed, Spawn, Spawned, SpawnLimits, ZygoteMsg
from plugbox.settings import DEFAULTS, Settings

__all__ = ["Ending", "WorkerProcess", "Zygote", "describe_status", "spawn_limits"]

log = logging.getLogger("plugbox.process")

def _clean_env(allow: tuple[str, ...]) -> dict[str, str]:
    env = {k: os.environ[k] for k in allow if k in os.environ}
    env["PATH"] = "/usr/bin:/bin"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def spawn_limits(s: Settings) -> SpawnLimits:
    """What every worker is confined to, from the host's settings: the one place they are read."""
    return SpawnLimits(
        memory_bytes=s.worker_memory_bytes,
        open_files=s.worker_open_files,
        file_size_bytes=s.worker_file_size_bytes,
        scratch_bytes=s.worker_scratch_bytes,
        frame_max_bytes=s.frame_max_bytes,
        netns=s.use_netns,
        degraded=s.confinement == "degraded",
        cgroup=CgroupLimits(mode=s.worker_cgroups, parent=s.cgroup_parent, cpu_quota_percent=s.worker_cpu_quota_percent,
                            memory_bytes=s.worker_cgroup_memory_bytes, pids_max=s.worker_pids_max,
                            total_cpu_percent=s.workers_cpu_total_percent,
                            total_memory_bytes=s.workers_memory_total_bytes, total_pids=s.workers_pids_total),
        uids=s.worker_uids,
    )


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    return f"ended with wait status {status}"


_OOM_LIMITS = {
    "own": "its own memory limit (worker_cgroup_memory_bytes) reached",
    "total": "the memory total of all workers (workers_memory_total_bytes) reached",
}


@dataclass(frozen=True, slots=True)
class Ending:
    """How a worker ended: its raw wait status (-1: the zygote went first, status unknown), the
    kernel's OOM kills in its cgroup and whose limit was reached ("own", "total", "" unknown)."""

    status: int
    oom_kills: int = 0
    oom_limit: str = ""

    @property
    def oom(self) -> bool:
        return self.oom_kills > 0

    @property
    def limit_reached(self) -> str:
        """Whose memory limit an OOM kill followed, in words that name its setting."""
        return _OOM_LIMITS.get(self.oom_limit, "a memory limit reached")

    def describe(self) -> str:
        """`killed by SIGKILL`, or for an OOM kill `killed by SIGKILL: the kernel's OOM killer, the
        memory total of all workers (workers_memory_total_bytes) reached`."""
        text = describe_status(self.status)
        if self.oom:
            text += f": the kernel's OOM killer, {self.limit_reached}"
        return text


@dataclass(eq=False)
class WorkerProcess:
    pid: int
    pidfd: int
    channel: socket.socket
    exited: asyncio.Future[Ending] = field(repr=False)

    def kill(self) -> None:
        """SIGKILL through the pidfd; a no-op once the process is gone."""
        if self.pidfd < 0:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def signal(self, sig: int) -> None:
        if self.pidfd >= 0:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, sig)

    async def wait(self, grace: float) -> Ending | None:
        """How the worker ended, or None if it is still running after `grace` seconds."""
        try:
            async with asyncio.timeout(grace):
                return await asyncio.shield(self.exited)
        except TimeoutError:
            return None

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Zygote:
    """The host's handle on its zygote process."""

    def __init__(self, env_allow: tuple[str, ...] = DEFAULTS.worker_env_allow) -> None:
        self._env_allow = env_allow  # settings.worker_env_allow: what the zygote (and so each worker) inherits
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self._sids = itertools.count(1)
        self._spawning: dict[int, asyncio.Future[tuple[int, int]]] = {}
        self._exits: dict[int, asyncio.Future[Ending]] = {}
        self._early_exits: dict[int, Ending] = {}
        self._decoder = msgspec.json.Decoder(ZygoteMsg)
        self._lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def ensure_started(self) -> None:
        async with self._lock:
            if self.alive:
                return
            self._fail_all("zygote restarted")
            host_end, zyg_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                # Popen returns once the exec succeeded (milliseconds), once per host.
                self._proc = subprocess.Popen(  # noqa: ASYNC220
                    [sys.executable, "-I", "-m", "plugbox.worker.zygote", str(zyg_end.fileno())],
                    pass_fds=[zyg_end.fileno()],
                    env=_clean_env(self._env_allow),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    close_fds=True,
                    cwd="/",
                )
            finally:
                zyg_end.close()
            host_end.setblocking(False)
            self._ctl = host_end
            asyncio.get_running_loop().add_reader(host_end.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        ctl = self._ctl
        if ctl is None:
            return
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(ctl, MAX_CONTROL_MSG, 2)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lost(f"control channel error: {exc}")
                return
            if not data:
                self._lost("zygote exited")
                return
            try:
                msg = self._decoder.decode(data)
            except msgspec.DecodeError:
                log.error("zygote sent an undecodable control message; ignored")
                for fd in fds:
                    os.close(fd)
                continue
            self._handle(msg, fds)

    def _handle(self, msg: Spawned | Failed | Exited, fds: list[int]) -> None:
        if type(msg) is Spawned:
            fut = self._spawning.pop(msg.sid, None)
            if fut is None or fut.done() or len(fds) != 1:
                for fd in fds:  # nobody waits for this worker any more (cancelled spawn): end it
                    with contextlib.suppress(OSError):
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                    os.close(fd)
                return
            fut.set_result((msg.pid, fds[0]))
        elif type(msg) is Failed:
            fut = self._spawning.pop(msg.sid, None)
            if fut is not None and not fut.done():
                fut.set_exception(BridgeError(f"zygote could not start the worker: {msg.error}"))
        elif type(msg) is Exited:
            ending = Ending(msg.status, msg.oom_kills, msg.oom_limit)
            if ending.oom:
                log.warning("worker %d: the kernel's OOM killer ended %d process(es) in its cgroup (%s)", msg.pid,
                            msg.oom_kills, ending.limit_reached)
            exit_fut = self._exits.pop(msg.pid, None)
            if exit_fut is None:
                self._early_exits[msg.pid] = ending
            elif not exit_fut.done():
                exit_fut.set_result(ending)

    def _lost(self, reason: str) -> None:
        if self._ctl is not None:
            asyncio.get_running_loop().remove_reader(self._ctl.fileno())
            self._ctl.close()
            self._ctl = None
        self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        for fut in self._spawning.values():
            if not fut.done():
                fut.set_exception(BridgeError(reason))
        self._spawning.clear()
        for exit_fut in self._exits.values():
            if not exit_fut.done():
                exit_fut.set_result(Ending(-1))
        self._exits.clear()

    async def spawn(self, plugin_id: str, plugin_dir: str, scratch_dir: str, limits: SpawnLimits) -> WorkerProcess:
        await self.ensure_started()
        assert self._ctl is not None
        sid = next(self._sids)
        spec = Spawn(sid=sid, plugin_id=plugin_id, plugin_dir=plugin_dir, scratch_dir=scratch_dir, limits=limits)
        host_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, int]] = loop.create_future()
        self._spawning[sid] = fut
        try:
            await self._send_control(msgspec.json.encode(spec), worker_end.fileno())
        except BaseException as exc:
            self._spawning.pop(sid, None)
            host_end.close()
            if isinstance(exc, OSError):
                raise BridgeError(f"cannot reach the zygote: {exc}") from None
            raise
        finally:
            worker_end.close()
        try:
            pid, pidfd = await fut
        except BaseException:
            host_end.close()
            raise
        exited: asyncio.Future[Ending] = loop.create_future()
        if pid in self._early_exits:
            exited.set_result(self._early_exits.pop(pid))
        else:
            self._exits[pid] = exited
        return WorkerProcess(pid=pid, pidfd=pidfd, channel=host_end, exited=exited)

    async def _send_control(self, data: bytes, fd: int) -> None:
        """Send one spawn request. The control socket is non-blocking and its queue is small: on
        a burst of spawns, wait until it is writable again (one sender at a time, since a loop
        keeps one writer callback per fd)."""
        loop = asyncio.get_running_loop()
        async with self._send_lock:
            while True:
                ctl = self._ctl
                if ctl is None:
                    raise BridgeError("the zygote is gone")
                try:
                    socket.send_fds(ctl, [data], [fd])
                    return
                except BlockingIOError:
                    writable: asyncio.Future[None] = loop.create_future()
                    loop.add_writer(ctl.fileno(), _resolve, writable)
                    try:
                        await writable
                    finally:
                        loop.remove_writer(ctl.fileno())

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if self._ctl is not None:
            self._lost("zygote closed")
        if proc is None:
            return
        try:
            await asyncio.to_thread(proc.wait, 2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
