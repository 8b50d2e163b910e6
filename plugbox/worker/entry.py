"""A worker's first moments after the fork: confine, then serve.

`prepare_once` runs in the zygote before any fork (work shared by every worker, e.g. compiling the
seccomp filter); `run` runs in the child: it applies the confinement policy in plugbox.confine's
fixed order and, only if that succeeded (or the operator chose degraded mode), starts the server.
A worker whose confinement failed still says hello — with the error — so the host can report
which layer was missing, then exits without importing any plugin code.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from plugbox import confine
from plugbox.errors import ConfinementError

if TYPE_CHECKING:
    from plugbox.worker.zygote import Spawn

__all__ = ["prepare_once", "run"]

_prepared: Any = None


def prepare_once() -> None:
    global _prepared
    _prepared = confine.prepare_shared()


def _policy(spec: Spawn, channel_fd: int, placement: confine.CgroupPlacement,
            subid: confine.UidPlacement) -> confine.Policy:
    return confine.Policy(
        keep_fds=(channel_fd,),
        scratch_dir=spec.scratch_dir,
        plugin_dir=spec.plugin_dir,
        memory_bytes=spec.memory_bytes,
        open_files=spec.open_files,
        file_size_bytes=spec.file_size_bytes,
        scratch_bytes=spec.scratch_bytes,
        netns=spec.netns,
        degraded=spec.degraded,
        cgroup=placement,
        subid=subid,
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()


def run(spec: Spawn, channel_fd: int, placement: confine.CgroupPlacement, subid: confine.UidPlacement) -> int:
    from plugbox.worker.server import serve

    error: str | None = None
    try:
        report = confine.apply(confine.prepare(_policy(spec, channel_fd, placement, subid), _prepared))
        layers = [msgspec.to_builtins(r) for r in report.layers]
    except ConfinementError as exc:
        layers = [{"name": exc.layer, "applied": False, "detail": exc.reason}]
        error = str(exc)
    channel = socket.socket(fileno=channel_fd)
    sys.path[:] = [p for p in sys.path if p]  # no cwd-relative imports
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(channel, layers, error, spec.frame_max_bytes))
    finally:
        loop.close()
    return 3 if error else 0
