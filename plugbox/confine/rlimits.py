"""Layer 5, rlimits: address space, open files, file size, and no core dumps.

Soft and hard limits are set to the same value, before credentials are dropped (root can still
lower a hard limit past what a later non-root step could). A limit already below the policy's
stays where it is: this layer only ever tightens. RLIMIT_AS turns a memory bomb into MemoryError
in the worker instead of host-wide OOM pressure; CPython ignores SIGXFSZ, so hitting RLIMIT_FSIZE
raises OSError(EFBIG) instead of killing the worker. Raising limits back is refused by seccomp
(setrlimit/prlimit64 with a new limit) and, after the credential drop, by the kernel.

Under RLIMIT_AS, glibc's malloc would reserve a 64 MiB arena (address space, not memory) for each
new thread that allocates, so a 256 MiB worker could start only ~3 threads; mallopt(M_ARENA_MAX,
1) keeps every thread on the main arena (CPython's GIL serialises allocation anyway) and leaves the
8 MiB thread stacks as the bound: ~25 threads at the default limit. Skipped on a libc without it.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from plugbox.confine import _linux
from plugbox.confine.layer import Layer, LayerProbe, LayerResult, no_share
from plugbox.confine.policy import Policy

__all__ = ["LAYER", "NAME"]

NAME = "rlimits"
_M_ARENA_MAX = -8  # glibc malloc.h


@dataclass(frozen=True)
class _Plan:
    limits: tuple[tuple[str, int, int], ...]  # (name, RLIMIT_*, value)


def prepare(policy: Policy, _shared: None) -> _Plan:
    return _Plan(
        (
            ("AS", resource.RLIMIT_AS, policy.memory_bytes),
            ("NOFILE", resource.RLIMIT_NOFILE, policy.open_files),
            ("FSIZE", resource.RLIMIT_FSIZE, policy.file_size_bytes),
            ("CORE", resource.RLIMIT_CORE, 0),
        )
    )


def _tighter(value: int, hard: int) -> int:
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def apply(plan: _Plan) -> LayerResult:
    applied: list[str] = []
    for name, which, value in plan.limits:
        try:
            _soft, hard = resource.getrlimit(which)
            limit = _tighter(value, hard)
            resource.setrlimit(which, (limit, limit))
        except (OSError, ValueError) as exc:
            return LayerResult.failed(NAME, f"RLIMIT_{name}={value}: {exc}")
        applied.append(f"{name}={limit}")
    return LayerResult.ok(NAME, " ".join(applied) + f" (soft=hard); {_one_malloc_arena()}")


def _one_malloc_arena() -> str:
    mallopt = getattr(_linux.libc, "mallopt", None)
    if mallopt is None or mallopt(_M_ARENA_MAX, 1) != 1:
        return "malloc arenas not capped (no glibc mallopt)"
    return "malloc arenas capped at 1"


def probe() -> LayerProbe:
    return LayerProbe(NAME, True, "setrlimit AS/NOFILE/FSIZE/CORE")


LAYER: Layer[None, _Plan] = Layer(NAME, no_share, prepare, apply, probe)
