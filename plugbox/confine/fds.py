"""Layer 3, fds: no inherited file descriptor but the channel.

0/1/2 become /dev/null (anything a plugin prints goes nowhere; logs travel over the channel),
every other fd except `keep_fds` is closed with close_range(2) over the gaps between kept fds,
or by listing /proc/self/fd on kernels older than 5.9. Python objects still wrapping a closed fd
would later close a *reused* number, so the zygote must not hold file objects on other fds.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass

from plugbox.confine import _linux
from plugbox.confine.layer import Layer, LayerProbe, LayerResult, no_share
from plugbox.confine.policy import Policy

__all__ = ["LAYER", "NAME"]

NAME = "fds"
_MAX_FD = 0xFFFFFFFF  # close_range takes unsigned ints; this means "to the end of the table"


@dataclass(frozen=True)
class _Plan:
    keep: tuple[int, ...]  # sorted, all >= 3 (Policy validates)


def prepare(policy: Policy, _shared: None) -> _Plan:
    handshake = (policy.subid.fd,) if policy.subid.fd >= 0 else ()  # `userns` still needs it, then closes it
    return _Plan(tuple(sorted((*policy.keep_fds, *handshake))))


def _gaps(keep: tuple[int, ...]) -> list[tuple[int, int]]:
    """Inclusive fd ranges from 3 to the end of the table that avoid every kept fd."""
    ranges: list[tuple[int, int]] = []
    low = 3
    for fd in keep:
        if fd > low:
            ranges.append((low, fd - 1))
        low = max(low, fd + 1)
    ranges.append((low, _MAX_FD))
    return ranges


def _close_by_listing(keep: tuple[int, ...]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:  # the listing's own directory fd is already gone
                    raise


def _close_others(keep: tuple[int, ...]) -> str:
    try:
        for low, high in _gaps(keep):
            _linux.syscall("close_range", low, high, 0)
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
        _close_by_listing(keep)
        return "/proc/self/fd"
    return "close_range"


def _null_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()  # what the zygote buffered goes where it was meant to
        except (OSError, ValueError):
            pass  # closed or broken stream: nothing to flush
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    if null > 2:
        os.close(null)


def apply(plan: _Plan) -> LayerResult:
    for fd in plan.keep:
        try:
            os.fstat(fd)
        except OSError as exc:
            return LayerResult.failed(NAME, f"keep fd {fd} is not open: {exc.strerror}")
    try:
        _null_stdio()
        how = _close_others(plan.keep)
    except OSError as exc:
        return LayerResult.failed(NAME, f"closing inherited fds: {exc}")
    return LayerResult.ok(NAME, f"0-2 -> /dev/null; closed all others but {list(plan.keep)} ({how})")


def probe() -> LayerProbe:
    try:
        _linux.syscall("close_range", _MAX_FD, _MAX_FD, 0)  # an empty range: a no-op if supported
    except OSError as exc:
        return LayerProbe(NAME, True, f"close_range unavailable ({exc.strerror}); will list /proc/self/fd")
    return LayerProbe(NAME, True, "close_range(2)")


LAYER: Layer[None, _Plan] = Layer(NAME, no_share, prepare, apply, probe)
