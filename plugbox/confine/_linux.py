"""Thin ctypes access to the Linux calls the stdlib does not wrap: prctl, raw syscalls, capabilities.

Owns the syscall numbers and prctl constants, nothing else; every wrapper raises OSError with the
real errno so layers can report it. Loaded in the zygote, so a worker pays no dlopen after the fork.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform

__all__ = [
    "PR_CAPBSET_DROP",
    "PR_GET_NO_NEW_PRIVS",
    "PR_GET_SECCOMP",
    "PR_SET_DUMPABLE",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "PR_SET_SECCOMP",
    "PR_SET_SECUREBITS",
    "capabilities",
    "clear_capabilities",
    "libc",
    "mount",
    "prctl",
    "syscall",
    "syscall_number",
    "unshare",
]

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39

# Syscalls added since Linux 5.1 share one number on every architecture but alpha, so x86_64 and
# aarch64 (asm-generic) agree; the table is still per machine so an unknown one fails loudly
# instead of issuing a wrong syscall.
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "io_uring_setup": 425,
        "close_range": 436,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
    },
    "aarch64": {
        "io_uring_setup": 425,
        "close_range": 436,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
    },
}

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.prctl.restype = ctypes.c_int
libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
# Resolved here, in the zygote, rather than on first use: a CDLL looks a function up on first
# attribute access and caches it on itself, and doing that after the fork would copy zygote pages
# into every worker (docs/performance.md). The same goes for the machine's syscall table below
# and the capability array type.
for _name in ("capget", "capset", "mount", "unshare", "mallopt"):
    with contextlib.suppress(AttributeError):  # mallopt is glibc's; the rlimits layer copes without
        getattr(libc, _name)
_MACHINE = platform.machine()


def syscall_number(name: str) -> int:
    """The number of `name` on this machine; OSError(ENOSYS) if this module does not know it."""
    try:
        return _SYSCALLS[_MACHINE][name]
    except KeyError:
        raise OSError(errno.ENOSYS, f"no syscall number for {name} on {_MACHINE}") from None


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def syscall(name: str, *args: int | ctypes.c_void_p) -> int:
    """Issue a raw syscall by name; integers are passed as C longs (pointers via c_void_p)."""
    c_args = [a if isinstance(a, ctypes.c_void_p) else ctypes.c_long(a) for a in args]
    return _check(int(libc.syscall(ctypes.c_long(syscall_number(name)), *c_args)), name)


def mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    _check(int(libc.mount(source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(flags),
                          data.encode())), f"mount {fstype} on {target}")


def unshare(flags: int) -> None:
    _check(int(libc.unshare(flags)), f"unshare({flags:#x})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(int(libc.prctl(option, arg2, arg3, arg4, arg5)), f"prctl({option})")


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_CapPair = _CapData * 2  # the two 32-bit halves of each set (version 3)

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capabilities() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) capability sets of the calling thread, as 64-bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapPair()
    _check(int(libc.capget(ctypes.byref(header), data)), "capget")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def clear_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets (ambient follows permitted)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapPair()
    _check(int(libc.capset(ctypes.byref(header), data)), "capset")
