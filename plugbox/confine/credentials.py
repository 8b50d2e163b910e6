"""Layer 8, credentials: the worker holds no root and no capability.

A worker started as root (any of the real/effective/saved uids or gids is 0) calls setgroups([]),
setresgid and setresuid to `policy.unprivileged_uid` (gid = the same number). Leaving uid 0 clears
every capability, so the worker can no longer raise its rlimits back (CAP_SYS_RESOURCE), signal
or ptrace arbitrary processes, or bypass file permissions. A worker that is already unprivileged
keeps its uid but still drops any capability it holds (file or ambient capabilities).

The process is then marked non-dumpable: other processes of the same uid cannot ptrace it or
open its /proc files (and with them its channel fd). This runs before `namespaces` because only an
unprivileged owner can map its own uid into a new user namespace without help from outside, and
before `nnp`/`landlock`, which no longer need CAP_SYS_ADMIN once no_new_privs is set.

Host duties: `scratch_dir` must be owned by the unprivileged uid; `plugin_dir` and the Python
runtime must be readable (and every parent directory searchable) by it.

When they are not — typically a Python runtime under a 0700 home, such as pyenv in /root — the
worker cannot drop to that uid without losing its own interpreter. It then keeps uid 0 but holds
nothing of root: while CAP_SETPCAP is still there it locks the securebits (NOROOT,
NO_SETUID_FIXUP, KEEP_CAPS and NO_CAP_AMBIENT_RAISE, all locked: uid 0 can never regain
capabilities, not even through exec) and empties the bounding set, then clears every capability
set. That is the position of a host that runs as an ordinary user: what separates the worker
from the host is Landlock, seccomp and the other layers, not the uid. The detail says which mode
applied.

Changing the euid makes the kernel clear the parent-death signal (commit_creds in kernel/cred.c),
so it is re-armed here after the drop, with the same parent re-check as the `session` layer.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from plugbox.confine import _linux
from plugbox.confine.layer import Layer, LayerProbe, LayerResult
from plugbox.confine.policy import NOBODY, Policy, default_runtime_paths

__all__ = ["LAYER", "NAME", "keeps_root", "target_uid", "unreachable_for"]

NAME = "credentials"


@dataclass(frozen=True)
class _Plan:
    uid: int
    warnings: tuple[str, ...]
    scratch: str = ""
    keep_uid: bool = False  # root whose runtime the unprivileged uid cannot reach: drop caps only
    last_cap: int = 40


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63  # PR_CAPBSET_DROP of an unknown cap fails with EINVAL, which we tolerate


def _permits(st: os.stat_result, uid: int, gid: int, bits: tuple[int, int, int]) -> bool:
    user, group, other = bits
    if st.st_uid == uid:
        return bool(st.st_mode & user)
    if st.st_gid == gid:
        return bool(st.st_mode & group)
    return bool(st.st_mode & other)


_SEARCH = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
_READ = (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
_WRITE = (stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH)


def _blocker(path: str, uid: int, gid: int, final: tuple[int, int, int]) -> str | None:
    """The first component of `path` that uid/gid (no supplementary groups) cannot get through.

    Mode bits only: ACLs are not read (an ACL grant shows up as a false warning).
    """
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for depth in range(1, len(parts)):
        ancestor = os.sep.join(parts[:depth]) or os.sep
        if not _permits(os.stat(ancestor), uid, gid, _SEARCH):
            return ancestor
    st = os.stat(real)
    searchable = not stat.S_ISDIR(st.st_mode) or _permits(st, uid, gid, _SEARCH)
    if not (_permits(st, uid, gid, final) and searchable):
        return real
    return None


def unreachable_for(uid: int, gid: int, paths: Iterable[str], write: bool = False) -> list[str]:
    """Human-readable reasons uid cannot read (or write) each of `paths`; missing paths are ignored."""
    reasons = []
    for path in paths:
        try:
            blocker = _blocker(path, uid, gid, _WRITE if write else _READ)
        except FileNotFoundError:
            continue
        if blocker is not None:
            reasons.append(f"{path} ({blocker} denies uid {uid})")
    return reasons


def _is_root() -> bool:
    return 0 in os.getresuid() or 0 in os.getresgid()


@functools.lru_cache(maxsize=4)
def _runtime_unreachable(uid: int) -> tuple[str, ...]:
    return tuple(unreachable_for(uid, uid, default_runtime_paths()))


def keeps_root(uid: int = NOBODY) -> bool:
    """Whether a worker started by this (root) process keeps uid 0, because `uid` cannot read the
    Python runtime (see the module docstring)."""
    return _is_root() and bool(_runtime_unreachable(uid))


def target_uid(policy: Policy) -> int:
    """The uid this worker will run as once `credentials` has applied."""
    if not _is_root():
        return policy.subid.uid or os.geteuid()
    return 0 if _runtime_unreachable(policy.unprivileged_uid) else policy.unprivileged_uid


def share() -> None:
    """Check the default runtime for the default uid once, in the zygote (the answer is cached)."""
    if _is_root():
        _runtime_unreachable(NOBODY)


def prepare(policy: Policy, _shared: None) -> _Plan:
    uid = policy.unprivileged_uid
    warnings: list[str] = []
    if not _is_root():
        return _Plan(uid, ())
    runtime = _runtime_unreachable(uid)
    if runtime:
        return _Plan(uid, (), keep_uid=True, last_cap=_last_cap())
    read = unreachable_for(uid, uid, [*policy.runtime_paths, policy.plugin_dir])
    warnings += [f"cannot read {r}" for r in read]
    return _Plan(uid, tuple(warnings), scratch=policy.scratch_dir)


_SECURE_NOROOT_ALL = 0xEF  # NOROOT, NO_SETUID_FIXUP, KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE + their locks


def _disarm_root(last_cap: int) -> None:
    """uid 0 stays, its powers go: lock securebits and empty the bounding set (needs CAP_SETPCAP,
    so before the capability sets are cleared)."""
    _linux.prctl(_linux.PR_SET_SECUREBITS, _SECURE_NOROOT_ALL)
    for cap in range(last_cap + 1):
        try:
            _linux.prctl(_linux.PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise


def _rearm_parent_death(parent: int) -> None:
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        raise OSError(errno.ESRCH, f"parent {parent} died while credentials changed")


def _drop_to(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def apply(plan: _Plan) -> LayerResult:
    parent = os.getppid()
    try:
        if plan.keep_uid:
            _disarm_root(plan.last_cap)
            done = (f"kept uid 0 (uid {plan.uid} cannot read the Python runtime); securebits locked, "
                    "bounding set empty")
        elif _is_root():
            if plan.scratch:  # the host made it, as root: hand it to the uid the worker becomes
                os.chown(plan.scratch, plan.uid, plan.uid)
            _drop_to(plan.uid)
            _rearm_parent_death(parent)
            done = f"dropped root to uid/gid {plan.uid}, no supplementary groups"
        else:
            done = f"already unprivileged (uid {os.geteuid()})"
        if any(_linux.capabilities()):
            _linux.clear_capabilities()
        if any(_linux.capabilities()) or (_is_root() and not plan.keep_uid):
            return LayerResult.failed(NAME, "still holds root ids or capabilities after the drop")
        _linux.prctl(_linux.PR_SET_DUMPABLE, 0)
    except OSError as exc:
        return LayerResult.failed(NAME, f"dropping privileges to uid {plan.uid}: {exc}")
    detail = f"{done}; no capabilities; not dumpable"
    if plan.warnings:
        detail += "; WARNING " + "; ".join(plan.warnings)
    return LayerResult.ok(NAME, detail)


def probe() -> LayerProbe:
    if not _is_root():
        return LayerProbe(NAME, True, f"host already unprivileged (uid {os.geteuid()}); workers hold no "
                                      "capability (and their own uid where `userns` applies)")
    uid = NOBODY
    blocked = _runtime_unreachable(uid)
    if blocked:
        return LayerProbe(NAME, True, f"root keeps uid 0 with no capabilities and locked securebits "
                                      f"(uid {uid} cannot read the Python runtime: {'; '.join(blocked)})")
    return LayerProbe(NAME, True, f"root -> uid {uid}; runtime readable by it")


LAYER: Layer[None, _Plan] = Layer(NAME, share, prepare, apply, probe)
