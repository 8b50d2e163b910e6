"""Layer 12, seccomp (always last): a syscall filter for what no plugin needs.

Default ALLOW; the denied calls fail with EPERM, which CPython turns into PermissionError:
  no new sockets (socket; socketpair only as AF_UNIX SOCK_STREAM, which asyncio's self-pipe needs —
  an unnamed datagram pair could sendto() any named unix socket on the host), no exec, no new
  processes (fork, vfork, clone without CLONE_THREAD or with a namespace flag; clone3 answers
  ENOSYS so glibc falls back to clone for threads, whose flags a filter can read — clone3's live
  behind a pointer), no ptrace / process_vm_*, no io_uring, no mount family / unshare / setns,
  no keyrings, bpf, perf, userfaultfd, modules, kexec, reboot, swap, handle-based opens, pidfds,
  no raising rlimits (setrlimit, prlimit64 with a new limit), no changing file metadata (chmod,
  chown, utime, xattr families), no System V IPC, and a few legacy or privileged calls.
  kill/tgkill stay allowed: Landlock's signal scope keeps them inside the worker's domain.
A syscall of a foreign architecture — i386 via int 0x80, or x32 (nr | 0x40000000) on x86_64 —
kills the process (libseccomp's bad-arch action; only the native arch is in the filter).

libseccomp (through pyseccomp) compiles the filter to BPF once, in the zygote (`share`); the child
only loads the bytes with prctl(PR_SET_SECCOMP), which needs no_new_privs (the `nnp` layer) and
costs microseconds. It goes last so the earlier layers may still use what it forbids (unshare,
prlimit64, ...).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
from dataclasses import dataclass

from plugbox.confine import _linux
from plugbox.confine.layer import Layer, LayerProbe, LayerResult
from plugbox.confine.policy import Policy

__all__ = ["DENIED", "LAYER", "NAME"]

NAME = "seccomp"
SECCOMP_MODE_FILTER = 2

DENIED = (
    "socket",
    "execve",
    "execveat",
    "fork",
    "vfork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "open_by_handle_at",
    "name_to_handle_at",
    "setrlimit",
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "personality",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "iopl",
    "ioperm",
    "lookup_dcookie",
    "mbind",
    "migrate_pages",
    "move_pages",
    "kcmp",
    "uselib",
    "process_madvise",
    # File metadata: Landlock has no right for these, and a worker that kept uid 0 (runtime
    # unreadable by the unprivileged uid) owns the host's files: without this it could chmod the
    # host's database world-writable, chown it, touch its times or set xattrs.
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "utime",
    "utimes",
    "futimesat",
    "utimensat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "setxattrat",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "removexattrat",
    # System V IPC is keyed by uid, not by path: a uid-0 worker could attach the host's segments.
    "shmget",
    "shmat",
    "shmctl",
    "shmdt",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
)
"""Syscalls refused outright with EPERM (names missing on this architecture are skipped)."""

CLONE_THREAD = 0x00010000
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET. (CLONE_NEWTIME shares its bit with
# clone()'s exit-signal byte; only clone3 and unshare can ask for it, and both are refused.)
_CLONE_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
_SOCK_TYPE_MASK = 0xF


@dataclass(frozen=True)
class _Filter:
    bpf: bytes  # sock_filter instructions, 8 bytes each
    error: str  # why there is no filter, "" when there is one
    summary: str


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _build() -> tuple[bytes, str]:
    import pyseccomp as sc  # type: ignore[import-untyped]  # loads libseccomp.so: zygote only

    flt = sc.SyscallFilter(sc.ALLOW)
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    eperm = sc.ERRNO(errno.EPERM)
    missing = []
    for name in DENIED:
        if sc.resolve_syscall(sc.Arch.NATIVE, name) < 0:  # e.g. fork/iopl on aarch64
            missing.append(name)
            continue
        flt.add_rule(eperm, name)
    flags_arg = 1 if platform.machine().startswith("s390") else 0  # clone(stack, flags, ...) there
    flt.add_rule(eperm, "clone", sc.Arg(flags_arg, sc.MASKED_EQ, CLONE_THREAD, 0))
    for ns in _CLONE_NAMESPACES:
        flt.add_rule(eperm, "clone", sc.Arg(flags_arg, sc.MASKED_EQ, ns, ns))
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    flt.add_rule(eperm, "socketpair", sc.Arg(0, sc.NE, socket.AF_UNIX))
    for sock_type in range(_SOCK_TYPE_MASK + 1):
        if sock_type != socket.SOCK_STREAM:
            flt.add_rule(eperm, "socketpair", sc.Arg(1, sc.MASKED_EQ, _SOCK_TYPE_MASK, sock_type))
    flt.add_rule(eperm, "prlimit64", sc.Arg(2, sc.NE, 0))
    fd = os.memfd_create("plugbox-seccomp", os.MFD_CLOEXEC)
    with open(fd, "w+b") as out:
        flt.export_bpf(out)
        out.seek(0)
        bpf = out.read()
    skipped = f"; not on this arch: {', '.join(missing)}" if missing else ""
    return bpf, skipped


def share() -> _Filter:
    try:
        bpf, skipped = _build()
    except (ImportError, OSError, RuntimeError, ValueError) as exc:  # pyseccomp raises RuntimeError sans lib
        return _Filter(b"", f"cannot build the filter: {exc}", "")
    summary = (
        f"{len(bpf) // 8} BPF instructions: {len(DENIED)} syscalls + clone/socketpair/prlimit64 by "
        f"argument -> EPERM, clone3 -> ENOSYS, foreign arch -> KILL_PROCESS{skipped}"
    )
    return _Filter(bpf, "", summary)


def prepare(policy: Policy, shared: _Filter) -> _Filter:
    return shared


def apply(plan: _Filter) -> LayerResult:
    if plan.error:
        return LayerResult.failed(NAME, plan.error)
    program = ctypes.create_string_buffer(plan.bpf, len(plan.bpf))
    fprog = _SockFprog(len(plan.bpf) // 8, ctypes.addressof(program))
    try:
        _linux.prctl(_linux.PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
    except OSError as exc:
        return LayerResult.failed(NAME, f"loading the filter: {exc}")
    return LayerResult.ok(NAME, plan.summary)


def probe() -> LayerProbe:
    try:
        _linux.prctl(_linux.PR_GET_SECCOMP)
    except OSError as exc:
        return LayerProbe(NAME, False, f"kernel without seccomp: {exc.strerror}")
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as f:
            actions = f.read().split()
    except OSError:
        actions = []
    if actions and not {"kill_process", "errno"} <= set(actions):
        return LayerProbe(NAME, False, f"kernel lacks kill_process/errno actions ({' '.join(actions)})")
    built = share()
    if built.error:
        return LayerProbe(NAME, False, built.error)
    return LayerProbe(NAME, True, f"seccomp-bpf filter mode; {built.summary}")


LAYER: Layer[_Filter, _Filter] = Layer(NAME, share, prepare, apply, probe)
