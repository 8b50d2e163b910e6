"""Layer 7, scratch: the private scratch directory gets a size limit as a whole.

RLIMIT_FSIZE caps one file, but nothing else capped how much a worker writes into scratch in
total, and scratch sits on the host's data filesystem: a hostile plugin could fill the host's
disk with many files. This layer gives the worker its own mount namespace (unshare(CLONE_NEWNS),
every mount made private so nothing propagates back to the host) and mounts a tmpfs of
`policy.scratch_bytes` over scratch_dir, owned by the uid the worker will run as, nosuid, nodev,
noexec. Writing past the limit fails with ENOSPC. The mount lives and dies with the worker's mount
namespace: nothing to clean up, nothing the host sees.

Its place: after `env` (which chdir'd into scratch — the working directory is re-entered here, or
it would point at the directory now hidden under the tmpfs) and before `credentials`, since it
needs CAP_SYS_ADMIN. Landlock, later, opens scratch_dir afresh and so grants the tmpfs, not what is
beneath it. tmpfs pages are memory: the limit is also what a worker can pin in RAM through its
scratch, beyond its address-space limit, so keep it modest.

A host not running as root mounts it in the worker's own user namespace, where `userns` left the
worker its namespace's capabilities (the tmpfs then belongs to the worker's subordinate uid). A
worker without either has no CAP_SYS_ADMIN to mount with. There the layer reports itself
unavailable and is skipped, not failed: it goes beyond the layers the policy must have (SPEC §7),
and failing closed on it would start no plugin at all on such a host. `plugbox doctor` and every
worker's report say so; scratch is then bounded per file only. `scratch_bytes = 0` turns it off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from plugbox.confine import _linux, credentials, userns
from plugbox.confine.layer import Layer, LayerProbe, LayerResult, no_share
from plugbox.confine.policy import Policy

__all__ = ["LAYER", "NAME"]

NAME = "scratch"

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_REC, MS_PRIVATE = 1 << 14, 1 << 18
_CAP_SYS_ADMIN = 1 << 21


@dataclass(frozen=True)
class _Plan:
    path: str
    size: int
    uid: int


def prepare(policy: Policy, _shared: None) -> _Plan:
    return _Plan(policy.scratch_dir, policy.scratch_bytes, credentials.target_uid(policy))


def apply(plan: _Plan) -> LayerResult:
    if plan.size <= 0:
        return LayerResult.not_requested(NAME, "no scratch size limit requested (scratch_bytes = 0)")
    if not _linux.capabilities()[0] & _CAP_SYS_ADMIN:
        return LayerResult.not_requested(NAME, "unavailable: mounting a size-limited scratch needs root or a "
                                               "user namespace of its own (CAP_SYS_ADMIN); scratch is bounded "
                                               "per file only")
    try:
        _linux.unshare(CLONE_NEWNS)
        _linux.mount("none", "/", "", MS_REC | MS_PRIVATE, "")
        _linux.mount("plugbox-scratch", plan.path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                     f"size={plan.size},mode=0700,uid={plan.uid},gid={plan.uid}")
        os.chdir(plan.path)
    except OSError as exc:
        return LayerResult.failed(NAME, f"size-limited scratch: {exc}")
    return LayerResult.ok(NAME, f"scratch is a private tmpfs of {plan.size >> 20} MiB (ENOSPC beyond), "
                                "in the worker's own mount namespace")


def probe() -> LayerProbe:
    if os.geteuid() != 0 and not userns.probe().available:
        return LayerProbe(NAME, False, "needs root or a user namespace per worker (CAP_SYS_ADMIN) to mount a "
                                       "size-limited scratch; without it workers start with scratch bounded "
                                       "per file only")
    if not os.path.exists("/proc/self/ns/mnt"):
        return LayerProbe(NAME, False, "kernel without mount namespaces")
    return LayerProbe(NAME, True, "private mount namespace + tmpfs with a size limit")


LAYER: Layer[None, _Plan] = Layer(NAME, no_share, prepare, apply, probe)
