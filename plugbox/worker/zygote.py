"""The zygote: a clean interpreter, started once per host with a scrubbed environment, that has
the worker runtime pre-imported and forks one child per plugin. It never held host secrets (it
is a fresh `exec`, not a fork of the host) and never runs plugin code itself; each child applies
confinement (plugbox.confine) right after the fork, before anything of the plugin is imported.

It speaks the control protocol of plugbox.protocol.spawn with the host.
The zygote is single-threaded (fork safety) and dies with the host (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import select
import signal
import socket
import sys
from typing import Any

import msgspec

from plugbox.confine.cgroups import Groups, Request
from plugbox.confine.policy import CgroupPlacement, UidPlacement
from plugbox.confine.userns import Subids
from plugbox.protocol import MAX_CONTROL_MSG, Exited, Failed, Spawn, Spawned
from plugbox.worker import entry, immortal, rehearsal

__all__ = ["main"]

PR_SET_PDEATHSIG = 1


_encode = msgspec.json.encode


def _set_pdeathsig() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _child(spec: Spawn, channel_fd: int, shared: Any, placement: CgroupPlacement, subid: UidPlacement) -> None:
    """In the forked child: confine, then serve. Never returns."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        code = entry.run(spec, channel_fd, shared, placement, subid)
    except BaseException:  # nothing may escape back into the zygote's loop
        code = 70
    finally:
        os._exit(code)


def _spawn(ctl: socket.socket, spec: Spawn, channel_fd: int, shared: Any, groups: Groups, subids: Subids) -> None:
    request = Request(**msgspec.structs.asdict(spec.limits.cgroup))
    placement = groups.place(f"w{spec.sid}-{spec.plugin_id[:40]}", request)  # made before the fork
    subid = subids.allot(spec.limits.uids)
    handshake: socket.socket | None = None
    if subid.uid:  # the child unshares, then we map its uid from outside (plugbox.confine.userns)
        handshake, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        subid = msgspec.structs.replace(subid, fd=child_end.detach())
    pid = os.fork()
    if pid == 0:
        ctl.close()
        if handshake is not None:
            handshake.close()
        _child(spec, channel_fd, shared, placement, subid)
    groups.adopt(pid, placement)
    if handshake is not None:
        os.close(subid.fd)
        subids.map(pid, subid, handshake)
    os.close(channel_fd)
    pidfd = os.pidfd_open(pid)
    try:
        socket.send_fds(ctl, [_encode(Spawned(spec.sid, pid))], [pidfd])
    finally:
        os.close(pidfd)


def _reap(ctl: socket.socket, groups: Groups, subids: Subids) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        subids.release(pid)
        ctl.send(_encode(Exited(pid, status, *groups.release(pid))))


def _preload(shared: Any) -> None:
    """Import what every worker needs once, here, so a fork starts warm, then rehearse a worker's
    first conversation so that what it caches on the way is shared too (plugbox.worker.rehearsal)."""
    import uvloop  # noqa: F401

    # (plugbox.confine and the worker server came in with this module's own imports.)
    # Build a throwaway loop once so asyncio's lazily-imported pieces are loaded pre-fork.
    asyncio.new_event_loop().close()
    failed = rehearsal.rehearse(shared, entry.new_loop)
    if failed is not None:  # the host relays the zygote's stderr; workers only start heavier
        print(f"plugbox zygote: the worker rehearsal failed ({failed}); workers start without it", file=sys.stderr)


def main(argv: list[str]) -> int:
    try:
        return _serve(argv)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the host is gone; PR_SET_PDEATHSIG is about to end us anyway


def _serve(argv: list[str]) -> int:
    ctl_fd = int(argv[1])
    parent = os.getppid()
    _set_pdeathsig()
    if os.getppid() != parent:
        return 0
    ctl = socket.socket(fileno=ctl_fd)
    shared = entry.prepare_shared()
    _preload(shared)
    decoder = msgspec.json.Decoder(Spawn)
    groups, subids = Groups(), Subids()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host decides when we end
    gc.collect()
    # Forks share the pre-imported heap only while nothing writes to it: immortal objects are never
    # reference-counted again (3.12+, plugbox.worker.immortal), frozen ones never visited by the GC.
    immortal.immortalize_heap()
    gc.freeze()
    while True:
        readable, _, _ = select.select([ctl.fileno(), wake_r], [], [])
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
            _reap(ctl, groups, subids)
        if ctl.fileno() in readable:
            try:
                data, fds, _flags, _addr = socket.recv_fds(ctl, MAX_CONTROL_MSG, 4)
            except InterruptedError:
                continue
            if not data:
                groups.close()
                return 0  # host closed the control channel
            spec: Any = None
            try:
                spec = decoder.decode(data)
                if len(fds) != 1:
                    raise ValueError(f"spawn needs exactly one channel fd, got {len(fds)}")
                _spawn(ctl, spec, fds[0], shared, groups, subids)
            except Exception as exc:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                sid = spec.sid if isinstance(spec, Spawn) else -1
                ctl.send(_encode(Failed(sid, f"{type(exc).__name__}: {exc}")))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
