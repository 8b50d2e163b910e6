"""What the hook bus tells plugins and the operator (SPEC §4), and the corners of its call loop:
a handler's failure goes to that plugin's log relay in the host's words; an observer is told once
that its answer was ignored; a handler past its budget is logged once per plugin per window; any
awaitable a handler returns is awaited; work done on a handler's behalf does not re-enter it."""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Generator
from typing import Any

import pytest

from plugbox.deadlines import Deadlines
from plugbox.hooks import HookBus, HookLimits
from plugbox.sdk import HookContext, HookResult

Told = list[tuple[str, str, str, str]]


def bus_telling(told: Told, modifiers: frozenset[str] = frozenset(), budget: float = 1.0, **kw: Any) -> HookBus:
    def relay(plugin_id: str, level: str, context: str, text: str) -> str:
        told.append((plugin_id, level, context, text))
        return f"printed:{text}"

    return HookBus(budget=lambda _p: budget, relay=relay, may_modify=lambda p: p in modifiers, **kw)


def test_a_hook_for_an_unknown_event_is_refused_and_the_plugin_told() -> None:
    told: Told = []
    bus = bus_telling(told)
    assert bus.register("p", "no:such", lambda _h: None) is False
    assert told == [("p", "warning", "refused hook for unknown event: ", "no:such")]
    assert bus.handlers("no:such") == []


def test_handlers_lists_an_events_registrations_in_call_order() -> None:
    bus = bus_telling([])
    bus.register("late", "session:ready", lambda _h: None, 200)
    bus.register("early", "session:ready", lambda _h: None, 1)
    bus.register("other", "message:sent", lambda _h: None)
    assert [r.plugin_id for r in bus.handlers("session:ready")] == ["early", "late"]


async def test_a_raising_handler_is_reported_to_its_plugin_with_the_exception_kind() -> None:
    told: Told = []
    bus = bus_telling(told)

    def boom(_hook: HookContext) -> None:
        raise ValueError("bad input")

    bus.register("p", "session:ready", boom)
    outcome = await bus.execute("session:ready", {})
    assert told == [("p", "warning", "hook session:ready failed: ", "ValueError: bad input")]
    assert outcome.errors == [("p", "printed:ValueError: bad input")]


@pytest.mark.parametrize("result, what", [(HookResult(data={"x": 1}, stop=True), "data and stop"),
                                          (HookResult(stop=True), "stop"), (HookResult(data={"x": 1}), "data")])
async def test_an_observer_is_told_once_what_of_its_answer_was_ignored(result: HookResult, what: str) -> None:
    told: Told = []
    bus = bus_telling(told)
    bus.register("watcher", "session:ready", lambda _h: result)
    for _ in range(2):
        outcome = await bus.execute("session:ready", {"n": 0})
        assert outcome.data == {"n": 0} and not outcome.stopped
    assert told == [("watcher", "warning", "hook session:ready: ",
                     f"returned {what} ignored: this plugin only observes events; rewriting data or halting an "
                     "event needs the permission 'hooks:modify' (said once)")]


async def test_without_a_may_modify_rule_every_handler_only_observes() -> None:
    bus = HookBus(budget=lambda _p: 1.0)
    after: list[str] = []
    bus.register("a", "session:ready", lambda _h: HookResult(stop=True))
    bus.register("b", "session:ready", lambda _h: after.append("b"))
    outcome = await bus.execute("session:ready", {})
    assert not outcome.stopped and after == ["b"]


async def test_an_empty_answer_is_a_success_and_the_chain_goes_on() -> None:
    succeeded: list[str] = []
    bus = bus_telling([], modifiers=frozenset({"a"}), on_success=succeeded.append)
    bus.register("a", "session:ready", lambda _h: HookResult())
    bus.register("b", "session:ready", lambda _h: None)
    outcome = await bus.execute("session:ready", {})
    assert succeeded == ["a", "b"] and not outcome.stopped


async def test_a_malformed_rewrite_of_a_send_ends_the_chain_before_anyone_else_sees_it() -> None:
    told: Told = []
    bus = bus_telling(told, modifiers=frozenset({"bad"}))
    seen: list[Any] = []
    bus.register("bad", "message:sending", lambda h: HookResult(data={**h.data, "input": "not an object"}), 1)
    bus.register("next", "message:sending", lambda h: seen.append(h.data), 2)
    pending = {"sessionId": "s1", "input": {"chatId": "c@c.us", "text": "hi"}, "type": "text"}
    outcome = await bus.execute("message:sending", pending, "s1")
    assert seen == [] and outcome.vetoed and outcome.stopped_by == "bad"
    assert outcome.malformed is not None and outcome.data == pending
    assert told and told[0][2] == "hook message:sending failed: "


async def test_the_default_relay_writes_the_plugins_failure_to_the_host_log(caplog: pytest.LogCaptureFixture) -> None:
    bus = HookBus(budget=lambda _p: 1.0)

    def boom(_hook: HookContext) -> None:
        raise KeyError("k")

    bus.register("p", "session:ready", boom)
    with caplog.at_level(logging.WARNING, logger="plugbox.hooks"):
        await bus.execute("session:ready", {})
    assert [r.getMessage() for r in caplog.records] == ["plugin p: hook session:ready failed: KeyError: 'k'"]


async def test_a_handler_past_its_budget_is_logged_once_per_plugin_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = HookBus(budget=lambda _p: 0.01)

    async def hang(_hook: HookContext) -> None:
        await asyncio.Event().wait()

    bus.register("slow", "session:ready", hang, 1)
    bus.register("slower", "session:ready", hang, 2)
    with caplog.at_level(logging.WARNING, logger="plugbox.hooks"):
        first = await (await bus.execute("session:ready", {})).settled()  # observers: their timeouts come later
        second = await (await bus.execute("session:ready", {})).settled()
    assert first.timed_out == ["slow", "slower"] and second.timed_out == ["slow", "slower"]
    assert [r.getMessage() for r in caplog.records] == [
        "hook session:ready: handler of plugin slow ran past its budget; treated as continue",
        "hook session:ready: handler of plugin slower ran past its budget; treated as continue",
    ]
    bus.close()


async def test_any_awaitable_a_handler_returns_is_awaited() -> None:
    @types.coroutine
    def legacy() -> Generator[Any, None, HookResult]:
        yield from asyncio.sleep(0).__await__()
        return HookResult(stop=True)

    loop = asyncio.get_running_loop()
    future: asyncio.Future[HookResult] = loop.create_future()
    future.set_result(HookResult(stop=True))
    for answer in (legacy, lambda: future):
        bus = bus_telling([], modifiers=frozenset({"p"}))
        bus.register("p", "session:ready", lambda _h, answer=answer: answer())
        assert (await bus.execute("session:ready", {})).stopped_by == "p"


async def test_work_done_for_a_handler_does_not_reach_that_handler_again_but_reaches_others() -> None:
    bus = bus_telling([])
    ran: list[str] = []
    bus.register("p", "session:ready", lambda _h: ran.append("p:ready"))
    bus.register("p", "session:disconnected", lambda _h: ran.append("p:disconnected"))
    bus.register("q", "session:ready", lambda _h: ran.append("q:ready"))
    ctx = bus.context_for("p", {"session:ready"})
    await asyncio.get_running_loop().create_task(bus.execute("session:ready", {}), context=ctx)
    await asyncio.get_running_loop().create_task(bus.execute("session:disconnected", {}), context=ctx)
    assert ran == ["q:ready", "p:disconnected"]
    ran.clear()
    await asyncio.get_running_loop().create_task(bus.execute("session:ready", {}), context=bus.context_for("p", ()))
    assert ran == ["p:ready", "q:ready"]


@pytest.mark.parametrize("role, late", [("observer", False), ("observer", True), ("modifier", False)],
                         ids=["observer-at-once", "observer-when-it-comes", "modifier"])
@pytest.mark.parametrize("answer, error", [(7, "handler returned int, expected HookResult or None"),
                                           (HookResult(error="no thanks"), "no thanks")], ids=["wrong-type", "error"])
async def test_a_wrong_answer_or_an_error_is_charged_to_its_plugin_and_the_chain_goes_on(
    role: str, late: bool, answer: Any, error: str
) -> None:
    told: Told = []
    charged: list[tuple[str, str]] = []
    after: list[str] = []
    bus = bus_telling(told, modifiers=frozenset({"watcher"} if role == "modifier" else ()),
                      on_error=lambda pid, message: charged.append((pid, message)))
    gate = asyncio.Event()

    async def answers_later(_hook: HookContext) -> Any:
        await gate.wait()
        return answer

    bus.register("watcher", "session:ready", answers_later if late else lambda _h: answer, 1)
    bus.register("next", "session:ready", lambda _h: after.append("next"), 2)
    outcome = await bus.execute("session:ready", {})
    gate.set()
    await outcome.settled()
    assert after == ["next"]
    assert outcome.errors == [("watcher", f"printed:{error}")]
    assert told == [("watcher", "warning", "hook session:ready failed: ", error)]
    assert charged == [("watcher", f"hook session:ready: printed:{error}")]


async def test_an_observers_late_answer_with_data_is_ignored_and_it_is_told() -> None:
    told: Told = []
    bus = bus_telling(told)

    async def rewrites(_hook: HookContext) -> HookResult:
        await asyncio.sleep(0)
        return HookResult(data={"x": 1})

    bus.register("watcher", "session:ready", rewrites)
    outcome = await (await bus.execute("session:ready", {"x": 0})).settled()
    assert outcome.data == {"x": 0} and outcome.errors == []
    assert [(pid, text.split(":")[0]) for pid, _, _, text in told] == [("watcher", "returned data ignored")]


async def test_a_plugin_registered_again_is_told_again_and_no_other_plugin_is() -> None:
    told: Told = []
    bus = bus_telling(told)
    for pid in ("a", "b"):
        bus.register(pid, "session:ready", lambda _h: HookResult(stop=True))
    await bus.execute("session:ready", {})
    bus.unregister_plugin("a")  # disabled: its "said once" goes with it
    bus.register("a", "session:ready", lambda _h: HookResult(stop=True))
    await bus.execute("session:ready", {})
    assert [pid for pid, *_ in told] == ["a", "b", "a"]


async def test_events_dropped_for_a_plugin_at_its_cap_are_told_once_with_the_cap() -> None:
    told: Told = []
    dropped: list[str] = []
    bus = bus_telling(told, limits=HookLimits(observers_pending=2), on_dropped=dropped.append)
    gate = asyncio.Event()

    async def slow(_hook: HookContext) -> None:
        await gate.wait()

    bus.register("slow", "session:ready", slow)
    for _ in range(4):
        await bus.execute("session:ready", {})
    assert dropped == ["slow", "slow"]
    assert told == [("slow", "warning", "hook session:ready: ", "events dropped: 2 invocations of this plugin's "
                     "handlers are still unanswered (said once)")]
    gate.set()
    await bus.settled()


async def test_a_spent_chain_budget_is_logged_naming_who_spent_most_and_who_was_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]

    def takes(seconds: float) -> Any:
        def handler(_hook: HookContext) -> None:
            now[0] += seconds

        return handler

    bus = bus_telling([], modifiers=frozenset({"quick", "hog", "late"}), budget=5.0,
                      deadlines=Deadlines(lambda: now[0], autosweep=False), limits=HookLimits(chain_budget=6.0))
    watched: list[Any] = []
    bus.register("quick", "session:ready", takes(2.0), 1)
    bus.register("hog", "session:ready", takes(2.5), 2)  # hog's two handlers: 4 s in all, the most
    bus.register("hog", "session:ready", takes(1.5), 3)
    bus.register("late", "session:ready", takes(0.0), 4)  # starts exactly as the chain's 6 s end
    bus.register("watcher", "session:ready", watched.append, 5)
    with caplog.at_level(logging.WARNING, logger="plugbox.hooks"):
        await bus.execute("session:ready", {})
        now[0] = 100.0
        await bus.execute("session:ready", {})  # spent again at once: not logged again
    assert [r.getMessage() for r in caplog.records] == [
        "hook session:ready: chain budget (6.0 s) spent, mostly by plugin hog; handlers from plugin late on "
        "skipped for this event"]
    assert len(watched) == 2  # observers after the spent chain still see the event
