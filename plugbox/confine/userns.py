"""Layer 6, userns (a host that does not run as root): each worker becomes a uid of its own.

A root host drops each worker to an unprivileged uid (`credentials`). A host running as an ordinary
user U cannot change uid, so without this layer every worker would share U — with the host and with
each other. With a subordinate-id range for U in /etc/subuid and /etc/subgid (useradd gives one;
`usermod --add-subuids`) and shadow's setuid `newuidmap`/`newgidmap`, each live worker gets one id
of that range, S+k, nobody else holds:

  child                                        zygote (uid U, unconfined)
  unshare(CLONE_NEWUSER)       -- "unshared" ->  newuidmap <pid> S+k S+k 1; newgidmap <pid> G+k G+k 1
                               <- "mapped" ---
  setgroups([]), setresgid(G+k), setresuid(S+k)

Single-id mappings (identity: the worker sees the same number the host does): U itself is not
mapped into the worker's namespace, so nothing the worker does there acts on U's files as their
owner. Another worker, S+j, shares neither uid nor user namespace: it cannot signal, ptrace or read
a 0700 file of S+k. U still can (it owns every worker's namespace), which is how the host stops
its workers.

Its place: after `cgroups` (joined as U, before the uid change) and `env` (which entered the
host-made scratch directory, U's and 0700, as U), before `scratch`; `fds` keeps the handshake
socket open for it and this layer closes it. Inside 0 is not mapped, so the uid change keeps the namespace's
capabilities (kernel cap_emulate_setxuid compares against the namespace's uid 0): `scratch` uses
CAP_SYS_ADMIN there to mount its tmpfs, owned by S+k, in a mount namespace of the worker's own —
the host-made scratch directory (U's, 0700) is never opened by the worker — and `credentials` then
clears every capability. The kernel clears the parent-death signal on the credential change, so it
is re-armed with the same parent re-check as `session`.

Modes (setting `worker_uids`): "required" fails closed when ids cannot be given out (no range, no
newuidmap, user namespaces disabled); "auto" gives them where possible and reports the layer
skipped with the reason elsewhere; "off". A root host never uses this layer: it has uids to give.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import signal
import socket
import subprocess
from dataclasses import dataclass

from plugbox.confine import _linux
from plugbox.confine.layer import Layer, LayerProbe, LayerResult, no_share
from plugbox.confine.policy import Policy, UidPlacement

__all__ = ["LAYER", "NAME", "Subids"]

NAME = "userns"
CLONE_NEWUSER = 0x10000000
MODES = ("required", "auto", "off")
_NEWUIDMAP = ("/usr/bin/newuidmap", "/usr/bin/newgidmap")
_ROOT_HOST = "not used: the host runs as root and `credentials` drops workers to an unprivileged uid"
_HANDSHAKE_TIMEOUT = 10.0  # seconds; two short execs of newuidmap/newgidmap


@dataclass(frozen=True)
class _Range:
    start: int
    count: int


def _subid_range(path: str, user: str, uid: int) -> _Range | None:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(uid)) and parts[1].isdigit() and parts[2].isdigit():
            return _Range(int(parts[1]), int(parts[2]))
    return None


def _refusal() -> tuple[_Range, _Range] | str:
    """The (uid, gid) ranges this host user may hand out, or why it cannot."""
    if os.geteuid() == 0:
        return _ROOT_HOST
    missing = [tool for tool in _NEWUIDMAP if not os.access(tool, os.X_OK)]
    if missing:
        return f"{', '.join(missing)} missing (Debian package uidmap)"
    from plugbox.confine import namespaces  # a sibling layer's kernel check, not a host import

    kernel = namespaces.kernel_refusal()
    if kernel is not None:
        return kernel
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    uids = _subid_range("/etc/subuid", user, uid)
    gids = _subid_range("/etc/subgid", user, uid)
    if uids is None or gids is None:
        return f"no subordinate id range for {user} in /etc/subuid and /etc/subgid (usermod --add-subuids)"
    return uids, gids


class Subids:
    """The zygote's share-out of subordinate ids: one per live worker, mapped at its request."""

    def __init__(self) -> None:
        self._ranges: tuple[_Range, _Range] | str | None = None
        self._by_pid: dict[int, int] = {}

    def allot(self, mode: str) -> UidPlacement:
        """Pick a free id for the next worker (before the fork). Never raises."""
        if mode == "off" or os.geteuid() == 0:
            return UidPlacement(note="off (worker_uids = off)" if mode == "off" else _ROOT_HOST)
        if self._ranges is None:
            self._ranges = _refusal()
        if isinstance(self._ranges, str):
            return UidPlacement(required=mode == "required", note=self._ranges)
        uids, gids = self._ranges
        taken = set(self._by_pid.values())
        # Offset 0 is skipped: some tools treat the range's first id as the namespace's root.
        slot = next((k for k in range(1, min(uids.count, gids.count)) if uids.start + k not in taken), None)
        if slot is None:
            return UidPlacement(required=mode == "required", note=f"all {uids.count - 1} subordinate ids in use")
        return UidPlacement(uid=uids.start + slot, gid=gids.start + slot, required=mode == "required",
                            note=f"slot {slot}")

    def map(self, pid: int, placement: UidPlacement, sock: socket.socket) -> None:
        """After the fork: wait for the child to unshare, write its maps, tell it. Never raises."""
        if not placement.uid:
            return
        self._by_pid[pid] = placement.uid
        sock.settimeout(_HANDSHAKE_TIMEOUT)
        try:
            if sock.recv(64) != b"unshared":
                return  # the child failed before unsharing and says so itself
            for tool, ident in zip(_NEWUIDMAP, (placement.uid, placement.gid), strict=True):
                done = subprocess.run([tool, str(pid), str(ident), str(ident), "1"], capture_output=True,
                                      timeout=_HANDSHAKE_TIMEOUT, env={"PATH": "/usr/bin:/bin"}, check=False)
                if done.returncode != 0:
                    sock.sendall(f"{tool} failed: {done.stderr.decode(errors='replace').strip()}"[:500].encode())
                    return
            sock.sendall(b"mapped")
        except (OSError, subprocess.SubprocessError) as exc:
            with contextlib.suppress(OSError):  # the child is gone: its own report says so
                sock.sendall(f"mapping failed: {exc}"[:500].encode())
        finally:
            sock.close()

    def release(self, pid: int) -> None:
        self._by_pid.pop(pid, None)


def prepare(policy: Policy, _shared: None) -> UidPlacement:
    return policy.subid


def _become(placement: UidPlacement) -> None:
    parent = os.getppid()
    sock = socket.socket(fileno=placement.fd)
    try:
        sock.settimeout(_HANDSHAKE_TIMEOUT)
        _linux.prctl(_linux.PR_SET_DUMPABLE, 1)  # newuidmap, as uid U, opens our /proc files
        _linux.unshare(CLONE_NEWUSER)
        sock.sendall(b"unshared")
        answer = sock.recv(512)
        if answer != b"mapped":
            raise OSError(errno.EPERM, answer.decode(errors="replace") or "the zygote closed the handshake")
    finally:
        sock.close()
    os.setgroups([])
    os.setresgid(placement.gid, placement.gid, placement.gid)
    os.setresuid(placement.uid, placement.uid, placement.uid)
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        raise OSError(errno.ESRCH, f"parent {parent} died while the worker changed uid")


def apply(placement: UidPlacement) -> LayerResult:
    if not placement.uid:
        if placement.fd >= 0:
            os.close(placement.fd)
        if placement.required:
            return LayerResult.failed(NAME, f"required but unavailable: {placement.note}")
        return LayerResult.not_requested(NAME, placement.note)
    host_uid = os.geteuid()
    try:
        _become(placement)
    except OSError as exc:
        return LayerResult.failed(NAME, f"becoming uid {placement.uid}: {exc}")
    if os.getresuid() != (placement.uid,) * 3 or os.getresgid() != (placement.gid,) * 3:
        return LayerResult.failed(NAME, f"uids {os.getresuid()} after the change, not {placement.uid}")
    return LayerResult.ok(NAME, f"uid/gid {placement.uid}/{placement.gid} of host uid {host_uid}'s subordinate "
                                "range, alone in its user namespace (mapped by newuidmap)")


def probe() -> LayerProbe:
    found = _refusal()
    if found == _ROOT_HOST:
        return LayerProbe(NAME, True, found)
    if isinstance(found, str):
        return LayerProbe(NAME, False, found)
    uids, gids = found
    return LayerProbe(NAME, True, f"a uid per worker from {uids.start}..{uids.start + uids.count - 1} "
                                  f"(gids from {gids.start}) via newuidmap/newgidmap")


LAYER: Layer[None, UidPlacement] = Layer(NAME, no_share, prepare, apply, probe)
