"""Layer 1, session: the worker gets its own session and dies with its parent.

setsid() detaches it from the host's process group and controlling terminal (no job-control
signals, no TIOCSTI on a shared tty). PR_SET_PDEATHSIG(SIGKILL) kills it when its parent goes.
The parent may die *before* the prctl; then the worker has already been re-parented and the
death signal will never come, so getppid() is compared afterwards with the pid recorded before
the fork (`share()` runs in the zygote). Note the kernel sends the signal when the parent
*thread* that forked exits, so the zygote must fork from a thread that lives as long as it does.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from plugbox.confine import _linux
from plugbox.confine.layer import Layer, LayerProbe, LayerResult
from plugbox.confine.policy import Policy

__all__ = ["LAYER", "NAME"]

NAME = "session"


@dataclass(frozen=True)
class _Origin:
    """The process that ran `share()` (normally the zygote) and its parent."""

    pid: int
    ppid: int


def share() -> _Origin:
    return _Origin(os.getpid(), os.getppid())


def prepare(policy: Policy, origin: _Origin) -> _Origin:
    return origin


def _expected_parent(origin: _Origin) -> int:
    # Forked after share(): the sharer is our parent. Not forked (a worker confining itself, as in
    # tests): our parent is the sharer's parent.
    return origin.ppid if os.getpid() == origin.pid else origin.pid


def apply(origin: _Origin) -> LayerResult:
    try:
        os.setsid()
    except PermissionError:
        if os.getsid(0) != os.getpid():
            return LayerResult.failed(NAME, "setsid: EPERM and not already a session leader")
    sid = os.getsid(0)
    try:
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError as exc:
        return LayerResult.failed(NAME, f"PR_SET_PDEATHSIG: {exc}")
    parent = _expected_parent(origin)
    now = os.getppid()
    if now != parent:
        return LayerResult.failed(NAME, f"parent {parent} died before PR_SET_PDEATHSIG (now child of {now})")
    return LayerResult.ok(NAME, f"own session {sid}; SIGKILL when parent {parent} dies")


def probe() -> LayerProbe:
    return LayerProbe(NAME, True, "setsid + PR_SET_PDEATHSIG(SIGKILL) + parent re-check")


LAYER: Layer[_Origin, _Origin] = Layer(NAME, share, prepare, apply, probe)
