"""The confinement policy of one worker, and the read-only paths a Python runtime needs.

A Policy is plain data: the host builds it (from settings and the plugin's directories), the worker
applies it. Nothing here touches the process; `default_runtime_paths` only reads `sys`.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig

import msgspec

from plugbox import errors

__all__ = ["NOBODY", "CgroupPlacement", "Policy", "UidPlacement", "default_runtime_paths"]

NOBODY = 65534
"""The default uid/gid a root-started worker drops to."""

# Read-only system paths a CPython with C extensions opens lazily: shared libraries and the loader
# cache (dlopen of an extension's dependencies), locale archives, time zones, MIME types.
_SYSTEM_RUNTIME_PATHS = (
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/lib",
    "/lib64",
    "/etc/ld.so.cache",
    "/usr/share/zoneinfo",
    "/etc/localtime",
    "/etc/mime.types",  # mimetypes.init() opens it without catching PermissionError (CPython 3.11)
    "/dev/urandom",
)


class CgroupPlacement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The worker's cgroup, made for it before the fork (see `cgroups`): the directories to join,
    one per hierarchy, or none with `note` saying why; `required` makes an absent group fatal."""

    dirs: tuple[str, ...] = ()
    required: bool = False
    note: str = "not requested"


class UidPlacement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The subordinate uid/gid a non-root host gave this worker (see `userns`), or none with `note`
    saying why; `fd` is the child's end of the mapping handshake with the zygote."""

    uid: int = 0
    gid: int = 0
    fd: int = -1
    required: bool = False
    note: str = "not requested"


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one worker may keep and touch. Sizes are bytes.

    The host must make `scratch_dir` owned by `unprivileged_uid` and `plugin_dir` (and the Python
    runtime) readable by it: when the worker starts as root it drops to that uid/gid before
    Landlock, so file permissions apply to it like to any user.
    """

    keep_fds: tuple[int, ...]
    """The channel fd(s) to keep; every other fd is closed, 0/1/2 become /dev/null."""
    scratch_dir: str
    """Private read-write directory; becomes TMPDIR, HOME and the working directory."""
    plugin_dir: str
    """The plugin's own files, read-only."""
    runtime_paths: tuple[str, ...] = ()
    """Extra read-only paths, on top of `default_runtime_paths()`."""
    memory_bytes: int = 256 << 20
    """RLIMIT_AS."""
    open_files: int = 256
    """RLIMIT_NOFILE."""
    file_size_bytes: int = 64 << 20
    scratch_bytes: int = 32 << 20
    """Size limit of the scratch directory as a whole (a tmpfs); 0 = no limit beyond file_size_bytes."""
    """RLIMIT_FSIZE."""
    env_allow: tuple[str, ...] = ("LANG", "LC_ALL", "TZ")
    """Environment variables kept; everything else is dropped."""
    netns: bool = False
    """Also enter a new user + network namespace (no network device at all)."""
    degraded: bool = False
    """False: the first layer that cannot apply raises ConfinementError. True: record it, go on."""
    unprivileged_uid: int = NOBODY
    """When the worker runs as root it drops to this uid (and the same gid)."""
    cgroup: CgroupPlacement = CgroupPlacement()
    """The cgroup the worker joins first thing (CPU quota, memory, pids limits)."""
    subid: UidPlacement = UidPlacement()
    """A non-root host's subordinate uid for this worker, entered in its own user namespace."""

    def __post_init__(self) -> None:
        if not self.keep_fds:
            raise ValueError("keep_fds must name at least the channel fd")
        for fd in self.keep_fds:
            if fd < 3:
                raise ValueError(f"keep_fds: fd {fd} is one of 0/1/2, which become /dev/null")
        if len(set(self.keep_fds)) != len(self.keep_fds):
            raise ValueError("keep_fds: duplicate fd")
        for field in ("scratch_dir", "plugin_dir"):
            if not os.path.isabs(getattr(self, field)):
                raise ValueError(f"{field} must be an absolute path")
        for path in (*self.runtime_paths, *self.cgroup.dirs):
            if not os.path.isabs(path):
                raise ValueError(f"{path!r} is not absolute")
        for field in ("memory_bytes", "open_files", "file_size_bytes"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive")
        if self.unprivileged_uid <= 0:
            raise ValueError("unprivileged_uid must be a non-root uid")


@functools.lru_cache(maxsize=1)
def default_runtime_paths() -> tuple[str, ...]:
    """Read-only paths this interpreter needs to import modules lazily after confinement.

    The interpreter prefixes (stdlib, lib-dynload, site-packages), every existing `sys.path` entry
    except the working directory (`''`) — a worker can read whatever it can import from — the
    `plugbox` package itself (an editable install lives outside site-packages), and the system
    library, loader-cache, locale and time-zone paths. Paths that do not exist are kept here and
    dropped by the Landlock layer, so the list is the same on every host. Cached: the zygote
    computes it once before forking.
    """
    cwd = os.getcwd()
    candidates: list[str] = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates += [
        path
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (path := sysconfig.get_paths().get(key))
    ]
    candidates += [entry for entry in sys.path if entry and os.path.abspath(entry) != cwd]
    candidates.append(os.path.dirname(os.path.abspath(errors.__file__)))
    candidates += _SYSTEM_RUNTIME_PATHS
    seen: dict[str, None] = {}
    for path in candidates:
        seen.setdefault(os.path.abspath(path), None)
    return tuple(seen)
