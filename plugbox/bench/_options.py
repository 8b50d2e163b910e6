"""The options of a bench run and the one error it raises."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

__all__ = ["BenchError", "BenchOptions"]


class BenchError(Exception):
    """The suite could not measure (a plugin failed to enable, a hook failed, an anchor failed)."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    quick: bool = False
    plugins: int = 200  # scale test
    skip_node: bool = False
    cap_calls: int = 5000
    hook_calls: int = 5000
    warmup: int = 500
    pipelined_total: int = 20000
    in_flight: int = 64
    cold_starts: int = 20
    idle_workers: int = 20
    anchor_rtt: int = 20000
    anchor_pipelined: int = 100000
    node_starts: int = 20
    pin_cpu: int | None = None  # run everything (host, zygote, workers, anchors) on this one CPU

    @classmethod
    def make(
        cls, *, quick: bool = False, plugins: int | None = None, skip_node: bool = False, pin_cpu: int | None = None
    ) -> BenchOptions:
        if plugins is not None and plugins < 1:
            raise ValueError("--plugins must be at least 1")
        if pin_cpu is not None and pin_cpu not in os.sched_getaffinity(0):
            raise ValueError(f"--pin-cpu {pin_cpu}: not one of the usable CPUs {sorted(os.sched_getaffinity(0))}")
        base = cls(skip_node=skip_node, pin_cpu=pin_cpu)
        if quick:  # CI smoke: every phase runs, with small N; the numbers are not meant to be read
            base = replace(base, quick=True, plugins=8, cap_calls=300, hook_calls=300, warmup=100,
                           pipelined_total=2000, cold_starts=3, idle_workers=3, anchor_rtt=2000,
                           anchor_pipelined=5000, node_starts=3)
        return replace(base, plugins=plugins) if plugins is not None else base
