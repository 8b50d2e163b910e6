"""The record of one worker's confinement: every layer's result, in the order applied.

The same object travels to the host, `plugbox doctor`, the API and `dev run`.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from plugbox.confine.layer import LayerResult

__all__ = ["Report"]


class Report(msgspec.Struct):
    """`layers` in application order; `degraded` is True when some requested layer is not in force
    (which strict mode never lets happen: it raises instead); `missing` names those layers."""

    layers: list[LayerResult]
    degraded: bool

    @classmethod
    def of(cls, results: Sequence[LayerResult]) -> Report:
        layers = list(results)
        return cls(layers=layers, degraded=any(_is_missing(r) for r in layers))

    @property
    def missing(self) -> list[str]:
        return [r.name for r in self.layers if _is_missing(r)]

    @property
    def applied(self) -> list[str]:
        return [r.name for r in self.layers if r.applied]


def _is_missing(result: LayerResult) -> bool:
    return not result.applied and not result.skipped
