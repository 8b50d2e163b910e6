"""Rules of the hook bus's call loop that a plugin or the operator relies on (SPEC §4), one each:
what it counts of observers still unanswered, the re-entry marks at two levels, each plugin's own
budget and its share of an event (at the exact boundary too), which budget a timeout is charged to,
a plugin out of scope skipped without ending the chain, the limits taken from the operator's
settings, the default priority and source, and what the host is told after each chain."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from plugbox import hooks
from plugbox.deadlines import Deadlines
from plugbox.hooks import HookBus, HookLimits, HookOutcome
from plugbox.sdk import HookContext
from plugbox.settings import Settings

EVENT = "session:ready"


def _proxies(bus: HookBus, plugin_id: str) -> list[asyncio.Future[Any]]:
    """Register a handler that answers like a worker proxy: the future of an answer still to come."""
    loop = asyncio.get_running_loop()
    in_flight: list[asyncio.Future[Any]] = []

    def proxy(_hook: HookContext) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = loop.create_future()
        in_flight.append(fut)
        return fut

    bus.register(plugin_id, EVENT, proxy)
    return in_flight


async def _let_callbacks_run() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_each_unanswered_observer_call_is_counted_until_it_answers() -> None:
    bus = HookBus(budget=lambda _p: 60.0)
    watcher, other = _proxies(bus, "watcher"), _proxies(bus, "other")
    for _ in range(3):
        await bus.execute(EVENT, {})
    assert (bus.pending("watcher"), bus.pending("other")) == (3, 3)
    watcher[0].set_result(None)
    await _let_callbacks_run()
    assert (bus.pending("watcher"), bus.pending("other")) == (2, 3)
    watcher[1].set_result(None)
    await _let_callbacks_run()
    assert bus.pending("watcher") == 1
    watcher[2].set_result(None)
    for fut in other:
        fut.set_result(None)
    await bus.settled()
    assert (bus.pending("watcher"), bus.pending("other")) == (0, 0)
    bus.close()


async def test_a_plugin_with_room_for_one_unanswered_call_gets_the_event_once() -> None:
    bus = HookBus(budget=lambda _p: 60.0, limits=HookLimits(observers_pending=1))
    in_flight = _proxies(bus, "watcher")
    for _ in range(3):
        await bus.execute(EVENT, {})
    assert len(in_flight) == 1 and bus.pending("watcher") == 1 and bus.dropped("watcher") == 2
    in_flight[0].set_result(None)
    await bus.settled()
    await bus.execute(EVENT, {})
    assert len(in_flight) == 2
    bus.close()


@pytest.mark.parametrize("modifies", [False, True], ids=["observer", "modifier"])
async def test_a_handler_launched_from_another_handlers_work_does_not_reenter_that_handler(modifies: bool) -> None:
    """p's `session:ready` handler fires `session:disconnected`; p's handler of that must not
    fire `session:ready` back into p (two levels of marks, not just its own)."""
    bus = HookBus(budget=lambda _p: 5.0, may_modify=lambda _p: modifies)
    ran: list[str] = []

    async def on_ready(_hook: HookContext) -> None:
        ran.append("ready")
        await (await bus.execute("session:disconnected", {})).settled()

    async def on_disconnected(_hook: HookContext) -> None:
        ran.append("disconnected")
        if len(ran) < 6:  # a broken mark would recurse: bounded here so the test ends either way
            await (await bus.execute(EVENT, {})).settled()

    bus.register("p", EVENT, on_ready)
    bus.register("p", "session:disconnected", on_disconnected)
    await (await bus.execute(EVENT, {})).settled()
    await bus.settled()
    assert ran == ["ready", "disconnected"]
    bus.close()


def test_hook_limits_are_the_operators_settings_in_seconds() -> None:
    settings = Settings(hook_plugin_event_budget_ms=2500, hook_chain_budget_ms=7000, hook_handlers_per_event=3,
                        hook_observers_pending=9)
    assert HookLimits.of(settings) == HookLimits(plugin_event_budget=2.5, chain_budget=7.0, handlers_per_event=3,
                                                 observers_pending=9)
    assert HookLimits.of(Settings()).plugin_event_budget is None  # unset: each handler's own budget


async def test_a_handler_registered_without_a_priority_runs_at_100() -> None:
    bus = HookBus(budget=lambda _p: 1.0)
    order: list[str] = []
    bus.register("default", EVENT, lambda _h: order.append("default"))
    for name, priority in (("after", 101), ("tie", 100), ("before", 99)):
        bus.register(name, EVENT, lambda _h, name=name: order.append(name), priority)
    await bus.execute(EVENT, {})
    assert order == ["before", "default", "tie", "after"]


async def test_an_event_fired_without_a_source_comes_from_the_host() -> None:
    bus = HookBus(budget=lambda _p: 1.0)
    sources: list[str] = []
    bus.register("p", EVENT, lambda hook: sources.append(hook.source))
    await bus.execute(EVENT, {})
    assert sources == ["host"]


async def test_each_chain_is_timed_for_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(hooks.time, "perf_counter", lambda: now[0])
    timed: list[tuple[str, float]] = []
    bus = HookBus(budget=lambda _p: 1.0, may_modify=lambda _p: True, on_chain=lambda e, s: timed.append((e, s)))

    def takes_a_while(_hook: HookContext) -> None:
        now[0] += 2.5

    bus.register("p", EVENT, takes_a_while)
    await bus.execute(EVENT, {})
    assert timed == [(EVENT, 2.5)]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def takes(self, seconds: float, calls: list[str], name: str) -> Any:
        """A handler that takes `seconds` of this clock and answers in time."""

        def handler(_hook: HookContext) -> None:
            calls.append(name)
            self.now += seconds

        return handler


async def _never(_hook: HookContext) -> None:
    await asyncio.Event().wait()


def _timed_bus(clock: Clock, budgets: dict[str, float], limits: HookLimits | None = None,
               timeouts: list[str] | None = None, modify: bool = True) -> HookBus:
    return HookBus(budget=budgets.__getitem__, deadlines=Deadlines(clock, autosweep=False), limits=limits,
                   may_modify=lambda _p: modify, on_timeout=None if timeouts is None else timeouts.append)


async def _past(bus: HookBus, clock: Clock, seconds: float) -> None:
    clock.now += seconds
    bus._deadlines.sweep()
    for _ in range(3):
        await asyncio.sleep(0)


async def test_each_plugin_gets_its_own_handler_budget() -> None:
    clock, timeouts = Clock(), []
    bus = _timed_bus(clock, {"brief": 1.0, "patient": 5.0}, timeouts=timeouts, modify=False)
    bus.register("brief", EVENT, _never)
    bus.register("patient", EVENT, _never)
    outcome = await bus.execute(EVENT, {})
    await _past(bus, clock, 1.0)
    assert timeouts == ["brief"]
    await _past(bus, clock, 4.0)
    await outcome.settled()
    assert timeouts == ["brief", "patient"]


async def test_a_plugins_share_of_an_event_bounds_even_its_only_handler() -> None:
    clock = Clock()
    bus = _timed_bus(clock, {"mod": 5.0}, HookLimits(plugin_event_budget=2.0))
    bus.register("mod", EVENT, _never)
    running = asyncio.ensure_future(bus.execute(EVENT, {}))
    await _past(bus, clock, 0.0)
    await _past(bus, clock, 2.0)
    assert (await running).timed_out == ["mod"]


async def test_a_plugins_share_spent_to_the_second_skips_its_next_handler_but_not_other_plugins() -> None:
    clock, calls = Clock(), []
    bus = _timed_bus(clock, {"mod": 5.0, "other": 5.0}, HookLimits(plugin_event_budget=4.0))
    bus.register("mod", EVENT, clock.takes(4.0, calls, "first"), 1)
    bus.register("mod", EVENT, clock.takes(0.0, calls, "second"), 2)
    bus.register("other", EVENT, clock.takes(0.0, calls, "other"), 3)
    await bus.execute(EVENT, {})
    assert calls == ["first", "other"]


async def test_a_modifier_cut_when_its_own_budget_and_the_chains_end_together_is_charged() -> None:
    clock, timeouts = Clock(), []
    bus = _timed_bus(clock, {"mod": 5.0}, HookLimits(chain_budget=5.0), timeouts=timeouts)
    bus.register("mod", EVENT, _never)
    running = asyncio.ensure_future(bus.execute(EVENT, {}))
    await _past(bus, clock, 0.0)
    await _past(bus, clock, 5.0)
    assert (await running).timed_out == ["mod"] and timeouts == ["mod"]


async def test_a_plugin_out_of_scope_for_the_session_is_skipped_and_the_chain_goes_on() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def scope(plugin_id: str, session_id: str | None) -> dict[str, Any] | None:
        return None if plugin_id == "outside" else {"session": session_id}

    bus = HookBus(budget=lambda _p: 1.0, scope=scope)
    for pid in ("outside", "inside"):
        bus.register(pid, EVENT, lambda hook, pid=pid: seen.append((pid, hook.config)))
    await bus.execute(EVENT, {}, "s1")
    assert seen == [("inside", {"session": "s1"})]


async def test_the_outcome_of_each_chain_is_handed_on_with_its_session() -> None:
    bus = HookBus(budget=lambda _p: 1.0)
    told: list[tuple[HookOutcome, str | None]] = []

    async def on_outcome(outcome: HookOutcome, session_id: str | None) -> None:
        told.append((outcome, session_id))

    bus.on_outcome = on_outcome
    outcome = await bus.execute(EVENT, {"k": 1}, "s1")
    assert told == [(outcome, "s1")] and (outcome.event, outcome.data) == (EVENT, {"k": 1})


async def test_plugins_the_caller_leaves_out_are_skipped_and_the_rest_still_run() -> None:
    bus = HookBus(budget=lambda _p: 1.0)
    ran: list[str] = []
    for pid in ("a", "handed-over", "c"):
        bus.register(pid, EVENT, lambda _h, pid=pid: ran.append(pid))
    await bus.execute(EVENT, {}, skip={"handed-over"})  # a chat handed to a human: plugbox.handover
    await bus.execute(EVENT, {})
    assert ran == ["a", "c", "a", "handed-over", "c"]
