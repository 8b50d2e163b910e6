"""The orchestrator: applies the layers in one fixed, visible order and stops at the first failure.

    session -> cgroups -> fds -> env -> rlimits -> userns -> scratch -> credentials -> namespaces
            -> nnp -> landlock -> seccomp

Why this order: cgroups right after session, so what the worker allocates is charged to its own
group, while its uid can still write the group's files; rlimits while still root (a hard limit can
be lowered only once); userns after env (which chdir'd into the host-made scratch while the worker
was still the host's uid) and before scratch (a non-root host's worker takes its own uid there and
keeps its namespace's capabilities for the tmpfs); scratch mounts its tmpfs while CAP_SYS_ADMIN is
still there; credentials before namespaces (an unprivileged owner can map itself into a new user
namespace, root can only map uid 0 — see `namespaces`); nnp before landlock and seccomp (both require no_new_privs once
CAP_SYS_ADMIN is gone — see `nnp`); seccomp last, because it forbids calls the others make.

Three steps, in three places:
  prepare_shared()          zygote, once: policy-free work (compile seccomp, probe Landlock, paths)
  prepare(policy, shared)   child or zygote, per worker: cheap, no side effects
  apply(prepared)           child, right after fork, single-threaded, before any plugin import

In strict mode (`policy.degraded` false) the first layer that cannot apply raises ConfinementError
naming it, and the caller must exit without running plugin code: a worker never runs half
confined. In degraded mode the failure is recorded and the next layer is tried. An exception a
layer did not expect counts as that layer failing, in both modes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from plugbox.confine import (
    cgroups,
    credentials,
    env,
    fds,
    landlock,
    namespaces,
    nnp,
    rlimits,
    scratch,
    seccomp,
    session,
    userns,
)
from plugbox.confine.layer import Layer, LayerResult
from plugbox.confine.policy import Policy
from plugbox.confine.report import Report
from plugbox.errors import ConfinementError

__all__ = ["LAYERS", "Prepared", "Shared", "apply", "prepare", "prepare_shared"]

LAYERS: tuple[Layer[Any, Any], ...] = (
    session.LAYER,
    cgroups.LAYER,
    fds.LAYER,
    env.LAYER,
    rlimits.LAYER,
    userns.LAYER,
    scratch.LAYER,
    credentials.LAYER,
    namespaces.LAYER,
    nnp.LAYER,
    landlock.LAYER,
    seccomp.LAYER,
)
"""Every layer, in the order `apply` runs them."""


@dataclass(frozen=True)
class Shared:
    """What `prepare_shared` computed for each layer, in the zygote, before any fork."""

    layers: tuple[Layer[Any, Any], ...]
    values: tuple[Any, ...]


@dataclass(frozen=True)
class _Step:
    layer: Layer[Any, Any]
    plan: Any
    error: str = ""  # the layer's prepare itself failed


@dataclass(frozen=True)
class Prepared:
    """One worker's policy turned into ready-to-apply steps."""

    policy: Policy
    steps: tuple[_Step, ...]

    @property
    def order(self) -> list[str]:
        return [step.layer.name for step in self.steps]


def _unexpected(exc: Exception) -> str:
    return f"unexpected {type(exc).__name__}: {exc}"


def prepare_shared(layers: Sequence[Layer[Any, Any]] = LAYERS) -> Shared:
    """Run every layer's policy-free preparation. Call it in the process that will fork workers."""
    return Shared(tuple(layers), tuple(layer.share() for layer in layers))


def prepare(policy: Policy, shared: Shared | None = None) -> Prepared:
    """Turn `policy` into steps; computes `prepare_shared()` on the spot when not given one."""
    if shared is None:
        shared = prepare_shared()
    steps = []
    for layer, value in zip(shared.layers, shared.values, strict=True):
        try:
            steps.append(_Step(layer, layer.prepare(policy, value)))
        except Exception as exc:  # a bug in a layer must fail that layer, not crash the worker
            steps.append(_Step(layer, None, _unexpected(exc)))
    return Prepared(policy, tuple(steps))


def _run(step: _Step) -> LayerResult:
    if step.error:
        return LayerResult.failed(step.layer.name, step.error)
    try:
        return step.layer.apply(step.plan)
    except Exception as exc:  # same as above: reported as this layer's failure
        return LayerResult.failed(step.layer.name, _unexpected(exc))


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1  # no /proc to ask; the caller's contract is to be single-threaded


def apply(prepared: Prepared) -> Report:
    """Apply every step in order, in the calling (child) process. See the module docstring."""
    threads = _threads()
    if threads != 1:
        # Landlock and seccomp bind only the calling thread: other threads would stay unconfined.
        raise ConfinementError("contain", f"{threads} threads running; apply() must run single-threaded")
    results: list[LayerResult] = []
    for step in prepared.steps:
        result = _run(step)
        results.append(result)
        if not result.applied and not result.skipped and not prepared.policy.degraded:
            raise ConfinementError(result.name, result.detail)
    return Report.of(results)
