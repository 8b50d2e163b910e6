"""No plugin stalls an event for others (SPEC §4, issue 12 class 3): observers run beside the
chain, a plugin's handlers share one budget per event, the chain has an overall budget, and a
plugin's handlers per event and unanswered observer calls are capped. Fake handlers and a fake
clock: nothing here sleeps."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from plugbox.deadlines import Deadlines
from plugbox.hooks import HookBus, HookLimits, HookOutcome
from plugbox.sdk import HookContext, HookResult

EVENT = "message:received"
MESSAGE = {"id": "m1", "chatId": "15550100001@c.us", "from": "15550100001@c.us", "body": "hi", "fromMe": False,
           "timestamp": 1}
MODIFIERS = {"mod", "mod2", "mod3"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Books:
    """What the bus told the host: timeouts, successes, drops and the plugins' log lines."""

    def __init__(self) -> None:
        self.timeouts: list[str] = []
        self.successes: list[str] = []
        self.dropped: list[str] = []
        self.said: list[tuple[str, str]] = []

    def relay(self, plugin_id: str, level: str, context: str, text: str) -> str:
        self.said.append((plugin_id, context + text))
        return text


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def books() -> Books:
    return Books()


def _bus(clock: Clock, books: Books, limits: HookLimits | None = None, budget: float = 5.0) -> HookBus:
    return HookBus(budget=lambda _pid: budget, deadlines=Deadlines(clock, autosweep=False),
                   may_modify=MODIFIERS.__contains__, limits=limits, relay=books.relay,
                   on_timeout=books.timeouts.append, on_success=books.successes.append,
                   on_dropped=books.dropped.append)


def _waiting(gate: asyncio.Event, seen: list[Any] | None = None,
             result: HookResult | None = None) -> Callable[[HookContext], Any]:
    async def handler(hook: HookContext) -> HookResult | None:
        if seen is not None:
            seen.append(hook.data)
        await gate.wait()
        return result

    return handler


def _taking(clock: Clock, seconds: float, result: HookResult | None = None,
            calls: list[str] | None = None, name: str = "") -> Callable[[HookContext], Any]:
    """A handler that takes `seconds` of the fake clock and answers in time."""

    def handler(hook: HookContext) -> HookResult | None:
        if calls is not None:
            calls.append(name)
        clock.now += seconds
        return result

    return handler


async def _running(bus: HookBus, data: Any = MESSAGE) -> asyncio.Task[HookOutcome]:
    task = asyncio.ensure_future(bus.execute(EVENT, data))
    for _ in range(5):
        await asyncio.sleep(0)
    return task


# -- observers do not sit in the chain ---------------------------------------------------------------


async def test_an_observer_that_never_answers_does_not_hold_the_caller(clock: Clock, books: Books) -> None:
    bus = _bus(clock, books)
    gate = asyncio.Event()
    after: list[Any] = []
    bus.register("watcher", EVENT, _waiting(gate), 1)
    bus.register("mod", EVENT, lambda hook: after.append(hook.data), 2)
    outcome = await bus.execute(EVENT, MESSAGE)
    assert after == [MESSAGE]  # the modifier after it ran without waiting for it
    assert bus.pending("watcher") == 1 and outcome.observing
    gate.set()
    await outcome.settled()
    assert bus.pending("watcher") == 0 and books.successes == ["mod", "watcher"]


async def test_an_observer_sees_the_data_as_it_stands_at_its_place(clock: Clock, books: Books) -> None:
    bus = _bus(clock, books)
    seen: list[Any] = []
    gate = asyncio.Event()
    gate.set()
    bus.register("mod", EVENT, lambda h: HookResult(data={**h.data, "body": "first"}), 1)
    bus.register("watcher", EVENT, _waiting(gate, seen), 2)
    bus.register("mod2", EVENT, lambda h: HookResult(data={**h.data, "body": "second"}), 3)
    outcome = await (await bus.execute(EVENT, MESSAGE)).settled()
    assert [d["body"] for d in seen] == ["first"]
    assert outcome.data["body"] == "second"


async def test_an_observers_error_is_charged_to_its_plugin_when_it_comes(clock: Clock, books: Books) -> None:
    bus = _bus(clock, books)
    gate = asyncio.Event()

    async def fails(hook: HookContext) -> None:
        await gate.wait()
        raise RuntimeError("kaput")

    bus.register("watcher", EVENT, fails)
    outcome = await bus.execute(EVENT, MESSAGE)
    assert outcome.errors == []
    gate.set()
    await outcome.settled()
    assert outcome.errors == [("watcher", "RuntimeError: kaput")]
    assert books.said == [("watcher", "hook message:received failed: RuntimeError: kaput")]
    assert "watcher" not in books.successes


async def test_an_observer_past_its_budget_is_charged_a_timeout(clock: Clock, books: Books) -> None:
    bus = _bus(clock, books)
    bus.register("watcher", EVENT, _waiting(asyncio.Event()))
    outcome = await bus.execute(EVENT, MESSAGE)
    clock.now += 4.9
    bus._deadlines.sweep()
    await asyncio.sleep(0)
    assert books.timeouts == []
    clock.now += 0.1
    bus._deadlines.sweep()
    await outcome.settled()
    assert outcome.timed_out == ["watcher"] and books.timeouts == ["watcher"]
    assert bus.pending("watcher") == 0


async def test_an_observers_data_and_stop_are_ignored_and_it_is_told_once(clock: Clock, books: Books) -> None:
    bus = _bus(clock, books)
    later: list[str] = []
    bus.register("watcher", EVENT, lambda h: HookResult(data={**h.data, "body": "PWNED"}, stop=True), 1)
    bus.register("mod", EVENT, lambda h: later.append(h.data["body"]), 2)
    for _ in range(3):
        outcome = await (await bus.execute(EVENT, MESSAGE)).settled()
        assert outcome.data == MESSAGE and not outcome.stopped
    assert later == ["hi"] * 3
    told = [text for pid, text in books.said if pid == "watcher"]
    assert len(told) == 1 and "hooks:modify" in told[0]


async def test_the_bus_settles_every_observer_of_every_dispatch(clock: Clock, books: Books) -> None:
    bus = _bus(clock, books)
    gate = asyncio.Event()
    bus.register("watcher", EVENT, _waiting(gate))
    for _ in range(3):
        await bus.execute(EVENT, MESSAGE)
    settling = asyncio.ensure_future(bus.settled())
    await asyncio.sleep(0)
    assert not settling.done()
    gate.set()
    await settling
    assert bus.pending("watcher") == 0 and books.successes == ["watcher"] * 3


# -- caps per plugin ---------------------------------------------------------------------------------


async def test_a_handler_past_the_cap_per_event_is_refused_and_the_plugin_told_once(
    clock: Clock, books: Books
) -> None:
    bus = _bus(clock, books, HookLimits(handlers_per_event=3))
    accepted = [bus.register("many", EVENT, lambda h: None) for _ in range(5)]
    assert accepted == [True, True, True, False, False]
    assert bus.register("many", "message:sent", lambda h: None)  # the cap is per event
    assert bus.register("other", EVENT, lambda h: None)  # and per plugin
    told = [text for pid, text in books.said if pid == "many"]
    assert len(told) == 1 and "at most 3 handlers per event" in told[0]


async def test_past_its_pending_cap_an_event_is_dropped_for_that_plugin_only(clock: Clock, books: Books) -> None:
    bus = _bus(clock, books, HookLimits(observers_pending=2))
    gate = asyncio.Event()
    victim: list[str] = []
    bus.register("slow", EVENT, _waiting(gate), 1)
    bus.register("victim", EVENT, lambda h: victim.append(h.data["id"]), 2)
    for i in range(5):
        await bus.execute(EVENT, {**MESSAGE, "id": f"m{i}"})
    assert bus.pending("slow") == 2 and bus.dropped("slow") == 3 and books.dropped == ["slow"] * 3
    assert victim == [f"m{i}" for i in range(5)] and bus.dropped("victim") == 0
    told = [text for pid, text in books.said if pid == "slow"]
    assert len(told) == 1 and "dropped" in told[0]
    gate.set()
    await bus.settled()
    await bus.execute(EVENT, MESSAGE)  # answered: it gets events again
    assert bus.pending("slow") == 1 and bus.dropped("slow") == 3


async def test_events_another_plugin_caused_take_only_its_share_of_an_observers_slots(
    clock: Clock, books: Books
) -> None:
    """A flood of sends fires `message:sent` to every observer: past its share of the observer's
    slots, the flooder's events are dropped for it and charged to the flooder, and the observer
    still has room for the events the engine brings."""
    bus = _bus(clock, books, HookLimits(observers_pending=6, observers_per_cause=2))
    gate = asyncio.Event()
    bus.register("victim", "message:sent", _waiting(gate))
    bus.register("victim", EVENT, _waiting(gate))
    sent = {"id": "s1", "chatId": "15550100002@c.us", "body": "spam", "fromMe": True}
    for _ in range(5):
        await bus.execute("message:sent", sent, source="flooder", cause="flooder")
    assert bus.pending("victim") == 2
    assert bus.dropped("flooder") == 3 and bus.dropped("victim") == 0 and books.dropped == ["flooder"] * 3
    told = [text for pid, text in books.said if pid == "flooder"]
    assert len(told) == 1 and "dropped for plugin victim" in told[0]
    for i in range(4):  # what the engine brings still gets through, up to the observer's own cap
        await bus.execute(EVENT, {**MESSAGE, "id": f"m{i}"}, source="engine")
    assert bus.pending("victim") == 6 and bus.dropped("victim") == 0
    await bus.execute(EVENT, MESSAGE, source="engine")  # past its own cap: its own drop
    assert bus.dropped("victim") == 1
    gate.set()
    await bus.settled()
    await bus.execute("message:sent", sent, source="flooder", cause="flooder")  # answered: room again
    assert bus.pending("victim") == 1


async def test_events_fired_while_serving_a_plugins_call_are_its_doing_whatever_their_source(
    clock: Clock, books: Books
) -> None:
    """What the engine reports of a plugin's send (message:persisted, source "engine") is fired
    inside the task that serves the plugin's call: the bridge's context names the plugin as cause."""
    bus = _bus(clock, books, HookLimits(observers_pending=6, observers_per_cause=1))
    bus.register("victim", "message:persisted", _waiting(asyncio.Event()))
    serving = bus.context_for("flooder", ())
    for _ in range(3):
        await serving.run(asyncio.ensure_future, bus.execute("message:persisted", {"n": 1}, source="engine"))
    assert bus.pending("victim") == 1 and bus.dropped("flooder") == 2 and bus.dropped("victim") == 0
    await bus.execute("message:persisted", {"n": 2}, source="engine")  # the engine's own: no share
    assert bus.pending("victim") == 2


async def test_slow_observers_together_hold_only_a_fair_share_of_the_host_and_a_prompt_one_still_gets_events(
    clock: Clock, books: Books
) -> None:
    """Three slow plugins each under their own cap (4) would hold 12 invocations; the host's bound
    (6) is shared: once it is reached, a plugin at its fair share loses the event, charged to it,
    while a plugin with fewer unanswered than its share still gets it."""
    bus = _bus(clock, books, HookLimits(observers_pending=4, observers_total=6))
    gate = asyncio.Event()
    for slow in ("s1", "s2", "s3"):
        bus.register(slow, EVENT, _waiting(gate))
    for i in range(4):
        await bus.execute(EVENT, {**MESSAGE, "id": f"m{i}"})
    held = [bus.pending(p) for p in ("s1", "s2", "s3")]
    assert sum(held) <= 2 * 6 and max(held) <= 4 and sum(held) < 12  # the attack ran, and was bounded
    assert all(bus.dropped(p) > 0 for p in ("s1", "s2", "s3"))  # each charged for its own backlog
    prompt: list[str] = []
    bus.register("prompt", EVENT, lambda h: prompt.append(h.data["id"]))
    await bus.execute(EVENT, {**MESSAGE, "id": "late"})
    assert prompt == ["late"] and bus.dropped("prompt") == 0
    gate.set()
    await bus.settled()


async def test_events_a_plugin_caused_count_against_its_own_observers_cap_not_a_share(
    clock: Clock, books: Books
) -> None:
    bus = _bus(clock, books, HookLimits(observers_pending=4, observers_per_cause=1))
    bus.register("sender", "message:sent", _waiting(asyncio.Event()))
    for _ in range(4):
        await bus.execute("message:sent", MESSAGE, source="sender", cause="sender")
    assert bus.pending("sender") == 4 and bus.dropped("sender") == 0


# -- budgets -----------------------------------------------------------------------------------------


async def test_a_plugins_handlers_share_one_budget_per_event(clock: Clock, books: Books) -> None:
    bus = _bus(clock, books)
    bus.register("mod", EVENT, _taking(clock, 3.0), 1)
    bus.register("mod", EVENT, _waiting(asyncio.Event()), 2)
    task = await _running(bus)
    clock.now += 1.9
    bus._deadlines.sweep()
    await asyncio.sleep(0)
    assert not task.done()
    clock.now += 0.1  # 5 s since the event reached the plugin: 3 + 2
    bus._deadlines.sweep()
    outcome = await task
    assert outcome.timed_out == ["mod"] and books.timeouts == ["mod"]


async def test_a_plugin_whose_event_budget_is_spent_gets_no_further_handler(clock: Clock, books: Books) -> None:
    bus = _bus(clock, books, HookLimits(plugin_event_budget=4.0))
    calls: list[str] = []
    bus.register("mod", EVENT, _taking(clock, 4.0, calls=calls, name="first"), 1)
    bus.register("mod2", EVENT, _taking(clock, 0.5, calls=calls, name="other"), 2)
    bus.register("mod", EVENT, _taking(clock, 0.1, calls=calls, name="second"), 3)
    await bus.execute(EVENT, MESSAGE)
    assert calls == ["first", "other"]


async def test_observers_of_one_plugin_share_its_event_budget(clock: Clock, books: Books) -> None:
    bus = _bus(clock, books, HookLimits(plugin_event_budget=2.0))
    for _ in range(4):
        bus.register("watcher", EVENT, _waiting(asyncio.Event()))
    outcome = await bus.execute(EVENT, MESSAGE)
    clock.now += 2.0  # each has a 5 s budget of its own, the plugin 2 s for all of them
    bus._deadlines.sweep()
    await outcome.settled()
    assert outcome.timed_out == ["watcher"] * 4


async def test_past_the_chain_budget_the_rest_of_the_modifiers_are_skipped_and_the_spender_charged(
    clock: Clock, books: Books, caplog: pytest.LogCaptureFixture
) -> None:
    bus = _bus(clock, books, HookLimits(chain_budget=6.0))
    calls: list[str] = []
    watched: list[Any] = []
    bus.register("mod", EVENT, _taking(clock, 4.9), 1)
    bus.register("mod2", EVENT, _waiting(asyncio.Event()), 2)
    bus.register("mod3", EVENT, _taking(clock, 0.0, calls=calls, name="mod3"), 3)
    bus.register("watcher", EVENT, lambda h: watched.append(h.data), 4)
    task = await _running(bus)
    clock.now += 1.1  # mod2 is cut by what was left of the chain, not by its own 5 s
    with caplog.at_level(logging.WARNING, "plugbox.hooks"):
        bus._deadlines.sweep()
        outcome = await task
    assert calls == [] and watched == [MESSAGE]  # observers still see the event
    # Nobody ran past its own budget: the plugin that spent most of the chain is charged, once,
    # and not mod2, cut short by what mod left of it.
    assert books.timeouts == ["mod"] and outcome.timed_out == ["mod"]
    assert "chain budget" in caplog.text and "mostly by plugin mod;" in caplog.text


async def test_a_modifier_that_spends_the_chain_alone_is_charged_when_the_chain_cuts_it(
    clock: Clock, books: Books
) -> None:
    bus = _bus(clock, books, HookLimits(chain_budget=2.0))
    calls: list[str] = []
    bus.register("mod", EVENT, _waiting(asyncio.Event()), 1)  # would have 5 s of its own
    bus.register("mod2", EVENT, _taking(clock, 0.0, calls=calls, name="mod2"), 2)
    task = await _running(bus)
    clock.now += 2.0
    bus._deadlines.sweep()
    outcome = await task
    assert outcome.timed_out == ["mod"] and books.timeouts == ["mod"]
    assert calls == []  # the chain is spent: later modifiers are skipped, and not charged


async def test_a_modifier_past_its_own_budget_is_charged_even_under_the_chain_budget(
    clock: Clock, books: Books
) -> None:
    bus = _bus(clock, books, HookLimits(chain_budget=10.0))
    calls: list[str] = []
    bus.register("mod", EVENT, _waiting(asyncio.Event()), 1)
    bus.register("mod2", EVENT, _taking(clock, 0.0, calls=calls, name="mod2"), 2)
    task = await _running(bus)
    clock.now += 5.0
    bus._deadlines.sweep()
    outcome = await task
    assert outcome.timed_out == ["mod"] and books.timeouts == ["mod"] and calls == ["mod2"]


# -- re-entry with observers beside the chain --------------------------------------------------------


async def test_a_detached_observer_that_fires_its_own_event_does_not_reenter_itself(
    clock: Clock, books: Books
) -> None:
    bus = _bus(clock, books)
    calls: list[str] = []

    async def refires(hook: HookContext) -> None:
        calls.append("watcher")
        await asyncio.sleep(0)  # past the point where execute went on without it
        await (await bus.execute(EVENT, hook.data)).settled()

    bus.register("watcher", EVENT, refires, 1)
    bus.register("other", EVENT, lambda h: calls.append("other"), 2)
    await (await bus.execute(EVENT, MESSAGE)).settled()
    await bus.settled()
    assert sorted(calls) == ["other", "other", "watcher"]  # its re-fired event reached only the other


async def test_a_workers_call_served_while_its_observer_is_in_flight_does_not_reenter_it(
    clock: Clock, books: Books
) -> None:
    """A worker's handler is a proxy that hands back the future of its answer; its capability
    calls are served in the context the bus gives for the events in flight to it."""
    bus = _bus(clock, books)
    loop = asyncio.get_running_loop()
    in_flight: list[asyncio.Future[Any]] = []
    calls: list[str] = []

    def proxy(hook: HookContext) -> asyncio.Future[Any]:
        calls.append("worker")
        fut: asyncio.Future[Any] = loop.create_future()
        in_flight.append(fut)
        return fut

    bus.register("worker", EVENT, proxy, 1)
    bus.register("other", EVENT, lambda h: calls.append("other"), 2)
    await bus.execute(EVENT, MESSAGE)
    assert calls == ["worker", "other"] and not in_flight[0].done()
    context = bus.context_for("worker", {EVENT})  # the bridge's books: EVENT is in flight to it
    await context.run(asyncio.ensure_future, bus.execute(EVENT, MESSAGE))
    assert calls == ["worker", "other", "other"]
    in_flight[0].set_result(None)
    await bus.settled()
    assert books.successes.count("worker") == 1
