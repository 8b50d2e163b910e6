"""Layer 9, namespaces (only if `policy.netns`): a new user + network namespace.

The new network namespace has no device but a down loopback, so even a socket that slipped past
seccomp reaches nothing. It runs *after* `credentials`, against the brief's first order, because
of how the kernel guards uid_map (user_namespaces(7), "Defining user and group ID mappings"): a
process inside the new namespace may only map its own effective uid unless it has CAP_SETUID in
the *parent* namespace, which it lost on entering. Unshared as root, the only mappable outside id
would be 0, and the later drop to the unprivileged uid would be impossible (that uid unmapped).
Unshared as the unprivileged uid, it maps itself ("uid uid 1"), writes "deny" to setgroups first
as the kernel requires for an unprivileged gid_map, then empties the full capability set it got
in the new namespace.

The process is briefly dumpable while writing the maps: a non-dumpable process's /proc/self files
belong to root, which the unprivileged worker cannot write. Needs unprivileged user namespaces
(user.max_user_namespaces > 0; kernel.unprivileged_userns_clone=1 where that Debian knob exists).
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass

from plugbox.confine import _linux, credentials
from plugbox.confine.layer import Layer, LayerProbe, LayerResult, no_share
from plugbox.confine.policy import Policy

__all__ = ["LAYER", "NAME"]

NAME = "namespaces"
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

# sysctl file -> value that forbids unprivileged user namespaces
_USERNS_BLOCKERS = {
    "/proc/sys/user/max_user_namespaces": "0",
    "/proc/sys/kernel/unprivileged_userns_clone": "0",
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1",
}


@dataclass(frozen=True)
class _Plan:
    requested: bool


def prepare(policy: Policy, _shared: None) -> _Plan:
    return _Plan(policy.netns)


def _write_proc(name: str, data: str) -> None:
    # The kernel wants each map in a single write(2) at offset 0.
    fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def _enter() -> None:
    uid, gid, parent = os.geteuid(), os.getegid(), os.getppid()
    _linux.prctl(_linux.PR_SET_DUMPABLE, 1)
    try:
        _linux.unshare(CLONE_NEWUSER | CLONE_NEWNET)
        _write_proc("setgroups", "deny")
        _write_proc("uid_map", f"{uid} {uid} 1")
        _write_proc("gid_map", f"{gid} {gid} 1")
    finally:
        _linux.prctl(_linux.PR_SET_DUMPABLE, 0)
    _linux.clear_capabilities()
    # New credentials (a new user namespace) clear the parent-death signal: re-arm it.
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        raise OSError(errno.ESRCH, f"parent {parent} died while entering the namespaces")


def apply(plan: _Plan) -> LayerResult:
    if not plan.requested:
        return LayerResult.not_requested(NAME, "not requested (policy.netns is false)")
    try:
        _enter()
    except OSError as exc:
        return LayerResult.failed(NAME, str(exc))
    if any(_linux.capabilities()):
        return LayerResult.failed(NAME, "capabilities left after entering the user namespace")
    return LayerResult.ok(NAME, f"new user+net namespace, uid {os.geteuid()} mapped to itself, no devices")


def _sysctl(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def kernel_refusal() -> str | None:
    """Why this kernel cannot give a worker user + network namespaces at all, or None."""
    if not os.path.exists("/proc/self/ns/user") or not os.path.exists("/proc/self/ns/net"):
        return "kernel without user or network namespaces"
    for path, forbidding in _USERNS_BLOCKERS.items():
        if _sysctl(path) == forbidding:
            return f"unprivileged user namespaces disabled ({path} = {forbidding})"
    return None


def probe() -> LayerProbe:
    refusal = kernel_refusal()
    if refusal is not None:
        return LayerProbe(NAME, False, refusal)
    if credentials.keeps_root():
        # Such a worker maps its own uid, 0, into the new namespace, and mapping the parent's uid 0
        # needs CAP_SETFCAP (kernel >= 5.12), which `credentials` has dropped by then.
        return LayerProbe(NAME, False, "workers here keep uid 0 without capabilities (the unprivileged uid "
                                       "cannot read the Python runtime) and cannot map uid 0 into a user "
                                       "namespace; install Python where that uid can read it")
    limit = _sysctl("/proc/sys/user/max_user_namespaces")
    return LayerProbe(NAME, True, f"user+net namespaces (max_user_namespaces={limit}); opt-in")


LAYER: Layer[None, _Plan] = Layer(NAME, no_share, prepare, apply, probe)
