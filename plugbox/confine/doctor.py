"""`plugbox doctor`'s view of confinement: can this host apply each layer, and with what.

Probes read kernel facts (Landlock ABI, seccomp actions, user namespace sysctls) and never confine
the calling process, so the host may call `probe()` at any time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plugbox.confine.contain import LAYERS
from plugbox.confine.layer import Layer, LayerProbe

__all__ = ["probe"]


def probe(layers: Sequence[Layer[Any, Any]] = LAYERS) -> list[LayerProbe]:
    """One LayerProbe per layer, in application order."""
    results = []
    for layer in layers:
        try:
            results.append(layer.probe())
        except Exception as exc:  # one broken probe must not hide the others
            results.append(LayerProbe(layer.name, False, f"probe failed: {type(exc).__name__}: {exc}"))
    return results
