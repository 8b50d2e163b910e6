"""The options of a bench run and the one error it raises."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from plugbox.errors import BenchError

__all__ = ["PLACEMENTS", "SCENARIOS", "BenchError", "BenchOptions"]

PLACEMENTS = ("split", "same", "free")
# full: every measured phase; chaos: fault injection; soak: leak watch; neighbours: a victim beside each
# attack class of a hostile plugin; cluster: three hosts on one PostgreSQL database.
SCENARIOS = ("full", "chaos", "soak", "neighbours", "cluster")
# plugins, duration in seconds, duration with --quick (neighbours: per attack class; its plugins are
# always one victim and one attacker)
_SCENARIO_DEFAULTS = {"chaos": (20, 60.0, 10.0), "soak": (10, 600.0, 10.0), "neighbours": (2, 8.0, 3.0),
                      "cluster": (1, 30.0, 9.0)}


@dataclass(frozen=True, slots=True)
class BenchOptions:
    quick: bool = False
    plugins: int = 200  # scale test
    skip_node: bool = False
    # Latency rounds: each is `bursts` turns in which every system (each anchor, plugbox's
    # capability round trip, plugbox's hook dispatch) runs one burst of round trips, the order
    # rotating; then a pipelined run of each. Ratios are per round, then the median of rounds.
    rounds: int = 5
    bursts: int = 10
    cap_calls: int = 50000  # over all rounds and bursts; each anchor runs as many round trips
    hook_calls: int = 50000
    warmup: int = 500
    pipelined_total: int = 100000  # over all rounds, for plugbox and for each anchor
    in_flight: int = 64
    cold_starts: int = 20
    idle_workers: int = 20
    anchor_rtt: int = 10000  # the anchors' standalone runs (reported beside, not in the ratios)
    anchor_pipelined: int = 100000
    node_starts: int = 20
    # Where the two sides of every pair run (plugbox host/worker, socketpair parent/child, Node main
    # thread/worker thread): "split" = side A on one CPU, side B on another, the same for all three,
    # so every pair pays the same cross-CPU wake-up; "same" = everything on one CPU (software cost
    # only); "free" = wherever the scheduler puts them (bimodal from run to run on a small VM).
    placement: str = "split"
    cpus: tuple[int, ...] = ()  # side A's CPU, then side B's
    scenario: str = "full"
    duration_s: float = 0.0  # chaos, soak and neighbours only
    attacks: tuple[str, ...] = ()  # neighbours: only these attack classes (all when empty)

    @classmethod
    def make(
        cls, *, quick: bool = False, plugins: int | None = None, skip_node: bool = False, placement: str = "split",
        scenario: str = "full", duration: float | None = None, attacks: tuple[str, ...] = (),
    ) -> BenchOptions:
        if plugins is not None and plugins < 1:
            raise ValueError("--plugins must be at least 1")
        if attacks and scenario != "neighbours":
            raise ValueError("--attack: only with --scenario neighbours")
        if scenario not in SCENARIOS:
            raise ValueError(f"--scenario {scenario!r}: one of {', '.join(SCENARIOS)}")
        if duration is not None and (scenario == "full" or duration <= 0):
            raise ValueError("--duration: a positive number of seconds, with any --scenario but full")
        if scenario != "full":
            default_plugins, default_duration, quick_duration = _SCENARIO_DEFAULTS[scenario]
            return cls(quick=quick, scenario=scenario, plugins=plugins or default_plugins,
                       duration_s=duration or (quick_duration if quick else default_duration), attacks=attacks)
        if placement not in PLACEMENTS:
            raise ValueError(f"--placement {placement!r}: one of {', '.join(PLACEMENTS)}")
        usable = sorted(os.sched_getaffinity(0))
        if placement == "split" and len(usable) < 2:
            placement = "same"  # one CPU: nothing to split
        cpus = {"split": tuple(usable[:2]), "same": (usable[0], usable[0]), "free": ()}[placement]
        base = cls(skip_node=skip_node, placement=placement, cpus=cpus)
        if quick:  # CI smoke: every phase runs, with small N; the numbers are not meant to be read
            base = replace(base, quick=True, rounds=1, bursts=2, plugins=8, cap_calls=300, hook_calls=300, warmup=100,
                           pipelined_total=2000, cold_starts=3, idle_workers=3, anchor_rtt=2000,
                           anchor_pipelined=5000, node_starts=3)
        return replace(base, plugins=plugins) if plugins is not None else base
