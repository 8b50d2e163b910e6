"""Layer 11, landlock: the worker sees the Python runtime and its plugin read-only, its scratch dir
read-write, and nothing else on disk; no TCP bind/connect; no signals or abstract unix sockets
outside its own domain.

Filesystem: every access right of ABI 1-7 that the running kernel supports is handled (rights of
a newer ABI are unknown here and stay unhandled, i.e. allowed, until the table below learns them).
Read-only paths (runtime paths + plugin dir) get READ_FILE|READ_DIR; EXECUTE is never granted
(exec is refused by seccomp anyway, and loading C extensions is mmap, which the EXECUTE right does
not cover). The scratch dir gets read/write/create/remove (no devices, no sockets); /dev/null
read/write. No /proc, no data dir, no home.

Network (ABI >= 4): BIND_TCP and CONNECT_TCP handled with no rule, so every TCP bind and connect
fails with EACCES, even on a socket inherited from outside. Scope (ABI >= 6):
ABSTRACT_UNIX_SOCKET and SIGNAL, so a worker cannot reach host abstract sockets or signal any
process outside its domain, even one with its uid. On an older ABI the missing parts are named in
the detail; the filesystem part is what this layer requires.

Why raw syscalls instead of a binding: the `landlock` PyPI package (1.0.0.dev5) has only
`handled_access_fs` in its ruleset attribute, so it cannot express network rights or scopes; its
`apply()` sets no_new_privs itself (that is the `nnp` layer's job, in a visible place); and its ABI
probe reads a stale errno. `landlockpy` (0.2.0) does express network rights and scopes, but it is a
young beta from one vendor, and it would replace only the three syscalls and two structs below
(about 40 lines), not the policy of which rights each path gets, which is what this module is about.
"""

from __future__ import annotations

import ctypes
import os
import stat
from dataclasses import dataclass

from plugbox.confine import _linux
from plugbox.confine.layer import Layer, LayerProbe, LayerResult
from plugbox.confine.policy import Policy, default_runtime_paths

__all__ = ["LAYER", "NAME", "abi_version"]

NAME = "landlock"

# include/uapi/linux/landlock.h
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_FS_BY_ABI = {1: (1 << 13) - 1, 2: FS_REFER, 3: FS_TRUNCATE, 5: FS_IOCTL_DEV}
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
_READ_ONLY = FS_READ_FILE | FS_READ_DIR
_READ_WRITE = (
    _READ_ONLY
    | FS_WRITE_FILE
    | FS_TRUNCATE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SYM
    | FS_MAKE_FIFO
    | FS_REFER
)
_DEV_NULL = "/dev/null"


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the uapi header
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _ptr(obj: ctypes.Structure) -> ctypes.c_void_p:
    return ctypes.c_void_p(ctypes.addressof(obj))


def abi_version() -> int:
    """The Landlock ABI of the running kernel; OSError (ENOSYS, EOPNOTSUPP) when there is none."""
    return _linux.syscall("landlock_create_ruleset", ctypes.c_void_p(None), 0, _CREATE_RULESET_VERSION)


@dataclass(frozen=True)
class _Path:
    path: str  # resolved
    is_dir: bool


@dataclass(frozen=True)
class _Shared:
    abi: int
    error: str  # why Landlock is unusable, "" when abi > 0
    runtime: tuple[_Path, ...]


@dataclass(frozen=True)
class _Plan:
    abi: int
    error: str
    handled_fs: int
    handled_net: int
    scoped: int
    rules: tuple[tuple[str, int], ...]  # (path, allowed access)


def _resolve(path: str) -> _Path | None:
    real = os.path.realpath(path)
    try:
        return _Path(real, stat.S_ISDIR(os.stat(real).st_mode))
    except FileNotFoundError:
        return None


def _inside(child: str, parent: str) -> bool:
    return (child + os.sep).startswith(parent.rstrip(os.sep) + os.sep)


def _outermost(paths: list[_Path]) -> list[_Path]:
    """Drop paths beneath another directory of the list: a rule covers its whole subtree."""
    kept: list[_Path] = []
    for entry in sorted(set(paths), key=lambda p: p.path):
        if not any(p.is_dir and _inside(entry.path, p.path) for p in kept):
            kept.append(entry)
    return kept


def share() -> _Shared:
    try:
        abi, error = abi_version(), ""
    except OSError as exc:
        abi, error = 0, f"Landlock unavailable: {exc.strerror}"
    resolved = [p for p in map(_resolve, default_runtime_paths()) if p is not None]
    return _Shared(abi, error, tuple(_outermost(resolved)))


def _handled(abi: int) -> tuple[int, int, int]:
    fs = 0
    for since, rights in _FS_BY_ABI.items():
        if abi >= since:
            fs |= rights
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scoped


def _failed_plan(abi: int, error: str) -> _Plan:
    return _Plan(abi, error, 0, 0, 0, ())


def prepare(policy: Policy, shared: _Shared) -> _Plan:
    if shared.error:
        return _failed_plan(shared.abi, shared.error)
    plugin, scratch = _resolve(policy.plugin_dir), _resolve(policy.scratch_dir)
    if plugin is None or scratch is None or not scratch.is_dir:
        return _failed_plan(shared.abi, "plugin_dir or scratch_dir is missing, or scratch is not a directory")
    if _inside(plugin.path, scratch.path):
        return _failed_plan(shared.abi, f"plugin_dir {plugin.path} is inside the writable scratch_dir")
    extra = [p for p in map(_resolve, policy.runtime_paths) if p is not None]
    fs, net, scoped = _handled(shared.abi)

    def allowed(entry: _Path, rights: int) -> int:
        return rights & fs & (~0 if entry.is_dir else _FILE_RIGHTS)

    read_only = _outermost([*shared.runtime, *extra, plugin])
    rules = [(p.path, allowed(p, _READ_ONLY)) for p in read_only]
    rules.append((scratch.path, allowed(scratch, _READ_WRITE)))
    rules.append((_DEV_NULL, allowed(_Path(_DEV_NULL, False), FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE)))
    return _Plan(shared.abi, "", fs, net, scoped, tuple(rules))


def _add_rule(ruleset_fd: int, path: str, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        attr = _PathBeneathAttr(access, fd)
        _linux.syscall("landlock_add_rule", ruleset_fd, _RULE_PATH_BENEATH, _ptr(attr), 0)
    finally:
        os.close(fd)


def _restrict(plan: _Plan) -> None:
    attr = _RulesetAttr(plan.handled_fs, plan.handled_net, plan.scoped)
    ruleset_fd = _linux.syscall("landlock_create_ruleset", _ptr(attr), ctypes.sizeof(attr), 0)
    try:
        for path, access in plan.rules:
            try:
                _add_rule(ruleset_fd, path, access)
            except PermissionError as exc:
                hint = f"uid {os.geteuid()} cannot reach it; the host must make it readable by that uid"
                raise OSError(exc.errno, f"rule for {path}: {exc.strerror} ({hint})") from exc
            except OSError as exc:
                raise OSError(exc.errno, f"rule for {path}: {exc.strerror}") from exc
        _linux.syscall("landlock_restrict_self", ruleset_fd, 0)
    finally:
        os.close(ruleset_fd)


def _describe(plan: _Plan) -> str:
    parts = [
        f"ABI {plan.abi}: read-only {len(plan.rules) - 2} path(s) incl. plugin dir, read-write scratch + "
        "/dev/null, nothing else"
    ]
    parts.append("TCP bind/connect denied" if plan.handled_net else "TCP not restricted (needs ABI 4)")
    parts.append("abstract unix + signals scoped" if plan.scoped else "no scoping (needs ABI 6)")
    return "; ".join(parts)


def apply(plan: _Plan) -> LayerResult:
    if plan.error:
        return LayerResult.failed(NAME, plan.error)
    try:
        _restrict(plan)
    except OSError as exc:
        return LayerResult.failed(NAME, str(exc))
    return LayerResult.ok(NAME, _describe(plan))


def probe() -> LayerProbe:
    try:
        abi = abi_version()
    except OSError as exc:
        return LayerProbe(NAME, False, f"unavailable: {exc.strerror} (needs CONFIG_SECURITY_LANDLOCK, lsm=)")
    _fs, net, scoped = _handled(abi)
    features = ["filesystem"] + (["tcp"] if net else []) + (["scopes"] if scoped else [])
    return LayerProbe(NAME, True, f"ABI {abi}: {', '.join(features)}")


LAYER: Layer[_Shared, _Plan] = Layer(NAME, share, prepare, apply, probe)
