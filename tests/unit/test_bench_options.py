"""`plugbox bench` options: placement follows the CPUs this process may use."""

from __future__ import annotations

import pytest

from plugbox.bench._options import BenchOptions


def test_split_on_a_single_usable_cpu_falls_back_to_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {3})
    options = BenchOptions.make(placement="split")
    assert options.placement == "same" and options.cpus == (3, 3)


def test_split_uses_the_first_two_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {5, 1, 7})
    options = BenchOptions.make(placement="split")
    assert options.placement == "split" and options.cpus == (1, 5)


def test_unknown_placement_and_scenario_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="--placement 'both'"):
        BenchOptions.make(placement="both")
    with pytest.raises(ValueError, match="--scenario 'stress'"):
        BenchOptions.make(scenario="stress")


def test_neighbours_runs_a_few_seconds_per_attack_class_and_can_pick_classes() -> None:
    options = BenchOptions.make(scenario="neighbours", attacks=("poison",))
    assert (options.duration_s, options.attacks) == (8.0, ("poison",))
    assert BenchOptions.make(scenario="neighbours", quick=True).duration_s == 3.0


def test_attack_classes_are_refused_outside_the_neighbours_scenario() -> None:
    with pytest.raises(ValueError, match="--attack"):
        BenchOptions.make(scenario="chaos", attacks=("poison",))
