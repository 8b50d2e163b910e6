"""What every confinement layer is: four verbs and the two records they return.

A layer is one module (`session`, `fds`, ..., `seccomp`) exposing a `LAYER`:

    share()                -> S   in the zygote, once, policy-free (e.g. compile the seccomp filter)
    prepare(policy, S)     -> P   per worker, cheap, no side effects (resolve and check paths)
    apply(P)               -> LayerResult   in the child; never raises for an expected failure
    probe()                -> LayerProbe    for `plugbox doctor`: can this kernel do it at all?

`apply` reports what it applied, or why it could not, in `LayerResult.detail`; the orchestrator
(`contain`) decides whether a failure is fatal. This module must not import any layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from plugbox.confine.policy import Policy

__all__ = ["Layer", "LayerProbe", "LayerResult", "no_share"]

S = TypeVar("S")
P = TypeVar("P")


class LayerResult(msgspec.Struct, frozen=True):
    """The outcome of one layer in one worker.

    `applied` is True when the layer is in force; `skipped` is True when the policy did not ask for
    it (then it is neither applied nor missing). `detail` says what was applied, or why not.
    """

    name: str
    applied: bool
    detail: str
    skipped: bool = False

    @classmethod
    def ok(cls, name: str, detail: str) -> LayerResult:
        return cls(name=name, applied=True, detail=detail)

    @classmethod
    def failed(cls, name: str, detail: str) -> LayerResult:
        return cls(name=name, applied=False, detail=detail)

    @classmethod
    def not_requested(cls, name: str, detail: str) -> LayerResult:
        return cls(name=name, applied=False, detail=detail, skipped=True)


class LayerProbe(msgspec.Struct, frozen=True):
    """Whether this kernel/host can apply a layer at all, with the evidence (ABI number, ...)."""

    name: str
    available: bool
    detail: str


@dataclass(frozen=True)
class Layer(Generic[S, P]):
    """One confinement mechanism, as the orchestrator sees it."""

    name: str
    share: Callable[[], S]
    prepare: Callable[[Policy, S], P]
    apply: Callable[[P], LayerResult]
    probe: Callable[[], LayerProbe]


def no_share() -> None:
    """`share` for layers that have nothing to precompute in the zygote."""
    return None
