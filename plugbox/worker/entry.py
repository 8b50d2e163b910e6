"""A worker's first moments after the fork: confine, then serve.

`prepare_shared` runs in the zygote before any fork (work shared by every worker, e.g. compiling
the seccomp filter; the zygote keeps what it returns and hands it to each child); `run` runs in the
child: it applies the confinement policy in plugbox.confine's
fixed order and, only if that succeeded (or the operator chose degraded mode), starts the server.
A worker whose confinement failed still says hello — with the error — so the host can report
which layer was missing, then exits without importing any plugin code.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

from plugbox import confine
from plugbox.errors import ConfinementError
from plugbox.protocol import LayerResult, Spawn
from plugbox.worker.server import serve

__all__ = ["new_loop", "prepare_shared", "run"]


def prepare_shared() -> Any:
    """The policy-free part of confinement, done once in the zygote and shared by every fork."""
    return confine.prepare_shared()


def _policy(spec: Spawn, channel_fd: int, placement: confine.CgroupPlacement,
            subid: confine.UidPlacement) -> confine.Policy:
    limits = spec.limits
    return confine.Policy(
        keep_fds=(channel_fd,),
        scratch_dir=spec.scratch_dir,
        plugin_dir=spec.plugin_dir,
        memory_bytes=limits.memory_bytes,
        open_files=limits.open_files,
        file_size_bytes=limits.file_size_bytes,
        scratch_bytes=limits.scratch_bytes,
        netns=limits.netns,
        degraded=limits.degraded,
        cgroup=placement,
        subid=subid,
    )


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()


def run(spec: Spawn, channel_fd: int, shared: Any, placement: confine.CgroupPlacement,
        subid: confine.UidPlacement) -> int:
    error: str | None = None
    try:
        report = confine.apply(confine.prepare(_policy(spec, channel_fd, placement, subid), shared))
        layers = [LayerResult(r.name, r.applied, r.detail, r.skipped) for r in report.layers]
    except ConfinementError as exc:
        layers = [LayerResult(exc.layer, False, exc.reason)]
        error = str(exc)
    channel = socket.socket(fileno=channel_fd)
    sys.path[:] = [p for p in sys.path if p]  # no cwd-relative imports
    loop = new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(channel, layers, error, spec.limits.frame_max_bytes))
    finally:
        loop.close()
    return 3 if error else 0
