"""A total that per-plugin budgets share: bounded, and paid for by whoever takes more than a fair share of it."""

from __future__ import annotations

import pytest

from plugbox.totals.rate import RateTotal


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(share: RateTotal, clock: Clock, rates: dict[str, float], seconds: float, step: float = 0.01,
        ) -> tuple[dict[str, float], dict[str, float]]:
    """Each plugin asks for `rate` CPUs; a paused one spends nothing until its pause ends. Returns
    the CPU seconds each got and the longest pause each was given."""
    got = dict.fromkeys(rates, 0.0)
    longest = dict.fromkeys(rates, 0.0)
    paused_until = dict.fromkeys(rates, 0.0)
    end = clock.now + seconds
    while clock.now < end:
        for key, rate in rates.items():
            if clock.now < paused_until[key]:
                continue
            spent = rate * step
            got[key] += spent
            pause = share.charge(key, spent)
            longest[key] = max(longest[key], pause)
            paused_until[key] = clock.now + pause
        clock.now += step
    return got, longest


def test_within_the_total_nobody_is_paused() -> None:
    clock = Clock()
    share = RateTotal(0.8, 0.2, clock=clock)
    got, longest = run(share, clock, {"a": 0.3, "b": 0.3, "c": 0.1}, 10)
    assert longest == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert got["a"] == pytest.approx(3.0)


def test_heavy_plugins_together_are_held_to_the_total_and_pay_for_it_alone() -> None:
    clock = Clock()
    share = RateTotal(0.8, 0.2, clock=clock)
    rates = {"flood-1": 0.5, "flood-2": 0.5, "flood-3": 0.5, "victim": 0.05}
    got, longest = run(share, clock, rates, 30)
    total = sum(got.values())
    assert total <= 0.8 * 30 + 0.2 + 0.05  # the total, its burst, one step of slack
    assert total >= 0.8 * 30 * 0.9  # and the loop is still used, not idled by the pauses
    assert longest["victim"] == 0.0  # never paused: within its fair share (0.8 / 4)
    assert got["victim"] == pytest.approx(0.05 * 30)
    stats = share.stats()
    assert set(stats.over_share) == {"flood-1", "flood-2", "flood-3"}
    assert stats.active == 4
    for key in ("flood-1", "flood-2", "flood-3"):  # shared evenly among the heavy ones
        assert got[key] == pytest.approx((total - got["victim"]) / 3, rel=0.15)


def test_one_plugin_over_the_total_is_held_to_it() -> None:
    clock = Clock()
    share = RateTotal(0.4, 0.1, clock=clock)
    got, _ = run(share, clock, {"hog": 0.9}, 20)
    assert got["hog"] <= 0.4 * 20 + 0.1 + 0.009


def test_a_plugin_that_stops_spending_stops_counting() -> None:
    clock = Clock()
    share = RateTotal(0.8, 0.2, clock=clock, window=1.0)
    run(share, clock, {"a": 0.5, "b": 0.5}, 5)
    assert share.stats().active == 2
    run(share, clock, {"a": 0.3}, 10)
    assert share.stats().active == 1  # b has not spent for 10 windows
    assert share.usage("b") == 0.0
    assert share.usage("a") == pytest.approx(0.3, rel=0.05)
    assert set(share.stats().over_share) == {"a", "b"}  # counted while both were over the total
    share.forget("a")
    share.forget("b")
    assert share.stats().active == 0
    assert share.stats().over_share == {}


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateTotal(0.0, 1.0)


def test_admit_refuses_only_those_over_their_fair_share_and_does_not_charge_what_it_refuses() -> None:
    """Log bytes: asked for before they are spent. Three loud plugins at 100 units a second each
    against a total of 120, beside a quiet one at 10."""
    clock = Clock()
    total = RateTotal(120.0, 20.0, clock=clock)
    asked = {"loud-1": 100.0, "loud-2": 100.0, "loud-3": 100.0, "quiet": 10.0}
    admitted = dict.fromkeys(asked, 0.0)
    refused = dict.fromkeys(asked, 0)
    step = 0.01
    for _ in range(int(20 / step)):
        for key, rate in asked.items():
            if total.admit(key, rate * step):
                admitted[key] += rate * step
            else:
                refused[key] += 1
        clock.now += step
    assert refused["quiet"] == 0 and admitted["quiet"] == pytest.approx(200.0)
    assert sum(admitted.values()) <= 120.0 * 20 + 20.0 + 3.0  # the total, its burst, one step each
    assert all(refused[f"loud-{n}"] > 0 for n in (1, 2, 3))
    assert total.stats().over_share.keys() == {"loud-1", "loud-2", "loud-3"}
    # What was refused was not charged: each loud one's recent rate is its share, not what it asked.
    assert all(total.usage(f"loud-{n}") < 60.0 for n in (1, 2, 3))


def test_admit_within_the_total_refuses_nothing() -> None:
    clock = Clock()
    total = RateTotal(120.0, 20.0, clock=clock)
    for _ in range(1000):
        assert total.admit("a", 0.5) and total.admit("b", 0.5)
        clock.now += 0.01
