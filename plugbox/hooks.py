"""The hook bus (SPEC §4): who handles which event, in which order, and what comes out.

`HookBus.execute` is the whole call loop: handlers run in ascending priority (ties in registration
order), each sees the data the previous one returned, `stop` ends the chain but its data applies,
a handler that raises, returns an error or runs past its budget is logged and skipped. Only a
plugin holding `hooks:modify` changes anything: its returned data must pass the event's payload
check (`plugbox.payloads`) before the next handler sees it; every other handler observes. Whether a
handler is in-process (built-in) or a proxy into a worker makes no difference here: every handler
takes a HookContext and returns a result or an awaitable of one, called under the plugin's budget.

No plugin stalls an event for others. Only a handler whose plugin holds `hooks:modify` can change
the outcome, so only those sit in the chain (modifiers, awaited in turn). Every other handler is an
observer: launched at its place in the order with the data as it stands then, under its own budget,
and not waited for; its errors and timeouts are still charged to its plugin when they come, and a
caller that wants them waits with `HookOutcome.settled()`. Budgets (`HookLimits`): a handler's own;
its plugin's for the event across all its handlers; the chain's across all modifiers (past it the
rest are skipped, and the plugin that spent most of it is named and charged a timeout). A plugin
may register a few handlers per event and have a bounded number of observer invocations
unanswered; past that the event is dropped for it and counted, so a slow observer cannot make the
host hold more and more of its work. Of those, only a share may be for events another plugin caused
(`cause`: its sends fire `message:sending`/`message:sent` to every observer); past it such an
event is dropped for that observer and charged to the plugin that caused it, whose flood then
cannot crowd out the events an observer gets from the engine.
(The call loop and the rules that judge each answer stay together here, read top to bottom, which
takes this module past 400 lines; what observers leave in flight is `plugbox.observing`'s.)

Re-entry: while a plugin's handler for an event runs, that event does not reach the same handler
again through a capability call the handler made (a `message:sending` handler that sends would
otherwise recurse). The bus marks the running (plugin, event) pairs in a context variable of its
own; a task started on a handler's behalf inherits it. A worker's capability calls arrive from
another process, so the bridge asks `HookBus.context_for` for the context to serve them in, naming
the events it has in flight to that worker from its own records, never from what the worker says.
The bus owns no plugin state; it asks the loader, through callbacks, which plugins are in scope
for a session and what their per-session config is.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from plugbox import payloads
from plugbox._ratelimit import RateLimiter
from plugbox.deadlines import Deadlines
from plugbox.errors import WorkerGone
from plugbox.events import EVENTS, VETO_EVENTS, unsupported_openwa_event
from plugbox.logrelay import sanitise
from plugbox.observing import Observing
from plugbox.sdk import HookContext, HookResult
from plugbox.settings import DEFAULTS, Settings

__all__ = ["Handler", "HookBus", "HookLimits", "HookOutcome", "Registration"]

log = logging.getLogger("plugbox.hooks")

Handler = Callable[[HookContext], Awaitable[HookResult | None] | HookResult | None]

# Prints plugin text on a plugin's behalf: (plugin_id, level, host context, plugin text) -> the
# plugin text as sanitised (what an outcome keeps). The context is the host's own words.
Relay = Callable[[str, str, str, str], str]
_MAX_CHARS = Settings().log_line_max_chars

# (plugin_id, event) pairs whose handler is running on behalf of this task.
_reentry: contextvars.ContextVar[frozenset[tuple[str, str]]] = contextvars.ContextVar(
    "plugbox_hook_reentry", default=frozenset()
)
# The plugin whose capability call this task serves: the events fired meanwhile are its doing
# (its send, and what the engine reports of it), whatever `source` they carry.
_cause: contextvars.ContextVar[str | None] = contextvars.ContextVar("plugbox_hook_cause", default=None)


@dataclass(frozen=True, slots=True)
class Registration:
    plugin_id: str
    event: str
    handler: Handler
    priority: int
    seq: int
    running: frozenset[tuple[str, str]]  # the re-entry mark while this handler runs: {(plugin_id, event)}
    shared: bool = False  # its plugin has other handlers on this event: they share one budget
    modifies: bool = False  # its plugin holds `hooks:modify` (fixed by its manifest): it sits in the chain


@dataclass(frozen=True, slots=True)
class HookLimits:
    """What one plugin may spend of an event (seconds and counts; see their settings)."""

    plugin_event_budget: float | None = None  # None: the handler budget
    chain_budget: float = DEFAULTS.hook_chain_budget_ms / 1000
    handlers_per_event: int = DEFAULTS.hook_handlers_per_event
    observers_pending: int = DEFAULTS.hook_observers_pending
    observers_per_cause: int = DEFAULTS.hook_observers_pending_per_cause
    observers_total: int | None = DEFAULTS.hook_observers_pending_total  # host-wide, shared fairly

    @classmethod
    def of(cls, settings: Settings) -> HookLimits:
        event_ms = settings.hook_plugin_event_budget_ms
        return cls(None if event_ms is None else event_ms / 1000, settings.hook_chain_budget_ms / 1000,
                   settings.hook_handlers_per_event, settings.hook_observers_pending,
                   settings.hook_observers_pending_per_cause, settings.hook_observers_pending_total)


class HookOutcome(msgspec.Struct):
    """What `execute` produced. `stopped` is true when a handler stopped the chain; `vetoed` when
    that happened on an event where stop means veto (`message:sending`, `webhook:before`), or when
    a handler allowed to rewrite such an event returned data of the wrong shape (`malformed` then
    says what was wrong: the caller refuses rather than act on data the rewrite meant to replace).
    `errors` and `timed_out` name the handlers that failed; an observer's failure is added when it
    comes, so a caller that reports them (dev run, tests) awaits `settled()` first.
    (A msgspec Struct rather than a dataclass: one is built per dispatch, at a third of the cost.)"""

    event: str
    data: Any
    stopped: bool = False
    stopped_by: str | None = None
    vetoed: bool = False
    malformed: str | None = None
    errors: list[tuple[str, str]] = msgspec.field(default_factory=list)
    timed_out: list[str] = msgspec.field(default_factory=list)
    observing: list[asyncio.Future[Any]] | None = None  # the observers launched and not yet settled
    cause: str | None = None  # the plugin whose doing the event was (its send); None: the engine's or the host's

    async def settled(self) -> HookOutcome:
        """Wait for every observer this dispatch launched to answer, fail or run out of budget."""
        while self.observing:
            pending, self.observing = self.observing, None
            await asyncio.wait(pending)
            await asyncio.sleep(0)  # (their done callbacks, which record the result, run first)
        return self


def _spender(marks: list[tuple[str, float]], now: float) -> str:
    """The plugin whose modifiers took the most of a chain, from when each began."""
    took: dict[str, float] = {}
    for (pid, began), (_, ended) in zip(marks, [*marks[1:], ("", now)], strict=True):
        took[pid] = took.get(pid, 0.0) + ended - began
    return max(took.items(), key=lambda item: item[1])[0] if took else "?"


def _awaitable(value: Any) -> bool:
    # hasattr first: a future or a coroutine answers it at once, inspect.isawaitable costs more.
    return hasattr(value, "__await__") or inspect.isawaitable(value)


def _plain_log(plugin_id: str, level: str, context: str, text: str) -> str:
    """The relay of a bus without plugins' relays (unit tests): capped and escaped, not rate-limited."""
    text = sanitise(text, (), _MAX_CHARS)
    log.warning("plugin %s: %s%s", plugin_id, context, text)
    return text


def _in_scope_without_config(plugin_id: str, session_id: str | None) -> dict[str, Any] | None:
    return {}


def _observe_only(plugin_id: str) -> bool:
    return False




class HookBus:
    def __init__(
        self,
        *,
        budget: Callable[[str], float],
        scope: Callable[[str, str | None], dict[str, Any] | None] = _in_scope_without_config,
        on_timeout: Callable[[str], None] | None = None,
        on_success: Callable[[str], None] | None = None,
        on_error: Callable[[str, str], None] | None = None,
        on_chain: Callable[[str, float], None] | None = None,
        on_dropped: Callable[[str], None] | None = None,
        relay: Relay | None = None,
        deadlines: Deadlines | None = None,
        may_modify: Callable[[str], bool] = _observe_only,
        limits: HookLimits | None = None,
    ) -> None:
        self._budget = budget
        self._deadlines = deadlines if deadlines is not None else Deadlines()
        self._scope = scope  # the plugin's config for a session, or None: that session is not its business
        # The plugin holds `hooks:modify`: it sits in the chain, its data and stop apply. Asked once
        # per registration (a plugin's permissions are its manifest's, fixed while it is loaded).
        self._may_modify = may_modify
        self._limits = limits or HookLimits()
        self._on_timeout = on_timeout
        self._on_success = on_success
        self._on_error = on_error  # told (plugin id, message as relayed) of each handler error
        self._on_dropped = on_dropped
        self.on_chain = on_chain  # told (event, seconds) after each execute; None: nothing is timed
        # Awaited with each chain's outcome before `execute` returns (outbound webhooks queue it
        # there, so the event's producer goes on only once the queue has it); None: nothing is told.
        self.on_outcome: Callable[[HookOutcome, str | None], Awaitable[None]] | None = None
        self._by_event: dict[str, tuple[Registration, ...]] = {}  # replaced, never mutated
        self._seq = itertools.count()
        self._timeout_logs: dict[str, RateLimiter] = {}
        self._chain_logs = RateLimiter(1, 10.0)
        self._observing = Observing(self._deadlines, self._limits.observers_pending, self._limits.observers_per_cause,
                                    self._limits.observers_total)
        self._told: set[tuple[str, str]] = set()  # (plugin, what) it was told once in its log
        # A handler's error is the plugin's own text: it goes through that plugin's log relay
        # (its rate limit, cap, redaction, escaping), never straight to the host log.
        self._relay = relay or _plain_log

    def register(self, plugin_id: str, event: str, handler: Handler, priority: int = 100) -> bool:
        """Add a handler. An unknown event, or one handler more than a plugin may have for an
        event, is refused with a warning in the plugin's log (returns False)."""
        if event not in EVENTS:
            what = "an OpenWA event not supported here" if unsupported_openwa_event(event) else "unknown event"
            self._relay(plugin_id, "warning", f"refused hook for {what}: ", event)
            return False
        regs = self._by_event.get(event, ())
        cap = self._limits.handlers_per_event
        if sum(1 for r in regs if r.plugin_id == plugin_id) >= cap:
            self._tell_once(plugin_id, "handlers", f"hook {event}: ",
                            f"registration refused: at most {cap} handlers per event (said once)")
            return False
        new = Registration(plugin_id, event, handler, priority, next(self._seq), frozenset({(plugin_id, event)}),
                           modifies=self._may_modify(plugin_id))
        if any(r.plugin_id == plugin_id for r in regs):
            new = dataclasses.replace(new, shared=True)
            regs = tuple(dataclasses.replace(r, shared=True) if r.plugin_id == plugin_id else r for r in regs)
        regs = (*regs, new)
        self._by_event[event] = tuple(sorted(regs, key=lambda r: (r.priority, r.seq)))
        return True

    def unregister_plugin(self, plugin_id: str) -> None:
        """Remove every handler of the plugin, and forget what it was told once."""
        self._told = {told for told in self._told if told[0] != plugin_id}
        for event, regs in self._by_event.items():
            self._by_event[event] = tuple(r for r in regs if r.plugin_id != plugin_id)

    def handlers(self, event: str) -> list[Registration]:
        return list(self._by_event.get(event, ()))

    def pending(self, plugin_id: str) -> int:
        """The plugin's observer invocations launched and not yet answered."""
        return self._observing.pending(plugin_id)

    def dropped(self, plugin_id: str) -> int:
        """Events dropped for the plugin because it had too many observer invocations pending."""
        return self._observing.dropped(plugin_id)

    async def settled(self) -> None:
        """Wait until no observer launched by any dispatch is unanswered (test harnesses, dev run)."""
        await self._observing.settled()

    async def execute(
        self, event: str, data: Any, session_id: str | None = None, source: str = "host", *,
        plugin: str | None = None, skip: Collection[str] = (), cause: str | None = None,
    ) -> HookOutcome:
        """Run the chain. With `plugin`, only that plugin's handlers run (an event about one
        plugin's own affairs, such as its ingress errors, is nobody else's business); the
        plugins in `skip` are left out (a chat handed to a human: `plugbox.handover`). `cause`: the
        plugin whose doing the event is (its send), which has only a share of other observers' slots;
        None: the plugin whose capability call this task serves, if any (`context_for`)."""
        if cause is None:
            cause = _cause.get()
        on_chain = self.on_chain
        started = time.perf_counter() if on_chain is not None else 0.0
        outcome = HookOutcome(event=event, data=data, cause=cause)
        active = _reentry.get()
        now = datetime.now(UTC)
        clock = self._deadlines.clock()
        chain_end = 0.0  # set when the first handler runs: the chain's clock starts then
        ends: dict[str, float] | None = None  # when each plugin's share of the event ends (several handlers)
        marks: list[tuple[str, float]] = []  # (plugin, when its modifier began): who spent the chain
        over = False  # the chain's budget is spent: no more modifiers for this event
        limits = self._limits
        for reg in self._by_event.get(event, ()):
            if plugin is not None and reg.plugin_id != plugin:
                continue
            if skip and reg.plugin_id in skip:
                continue
            if (reg.plugin_id, event) in active:
                continue
            config = self._scope(reg.plugin_id, session_id)
            if config is None:
                continue
            ctx = HookContext(event=event, data=outcome.data, session_id=session_id, timestamp=now,
                              source=source, config=dict(config))  # the handler's own copy
            began = clock()
            if not chain_end:
                chain_end = began + limits.chain_budget
            own_end = began + self._budget(reg.plugin_id)
            if reg.shared or limits.plugin_event_budget is not None:
                if ends is None:
                    ends = {}
                plugin_end = ends.setdefault(reg.plugin_id, began + (limits.plugin_event_budget or own_end - began))
                if plugin_end <= began:
                    continue  # its earlier handlers spent the plugin's share (the last one was charged)
                own_end = min(own_end, plugin_end)
            if not reg.modifies:
                self._observe(reg, ctx, outcome, active, own_end, None if cause == reg.plugin_id else cause)
                continue
            if over:
                continue
            if chain_end <= began:
                over = self._chain_spent(reg, marks, began, outcome)
                continue
            marks.append((reg.plugin_id, began))
            token = _reentry.set(active | reg.running if active else reg.running)
            try:
                # its budget, its plugin's, the chain's (`min` without the builtin's call)
                with self._deadlines.until(own_end if own_end < chain_end else chain_end):
                    result: Any = reg.handler(ctx)
                    if result is not None and type(result) is not HookResult and _awaitable(result):
                        result = await result
            except TimeoutError as exc:
                if chain_end < own_end:  # the chain ran out, not this plugin's budget
                    over = self._chain_spent(reg, marks, clock(), outcome)
                else:
                    self._failed(reg, exc, outcome)
                continue
            except Exception as exc:
                self._failed(reg, exc, outcome)
                continue
            finally:
                _reentry.reset(token)
            if result is None:
                self._succeeded(reg)
                continue
            if not isinstance(result, HookResult):
                self._error(reg, outcome, f"handler returned {type(result).__name__}, expected HookResult or None")
                continue
            if result.error is not None:
                self._error(reg, outcome, result.error)
                continue
            if self._applied(reg, result, outcome):
                break
        if on_chain is not None:
            on_chain(event, time.perf_counter() - started)
        if self.on_outcome is not None:
            await self.on_outcome(outcome, session_id)
        return outcome

    # -- observers: launched, not waited for --
    def _observe(self, reg: Registration, ctx: HookContext, outcome: HookOutcome,
                 active: frozenset[tuple[str, str]], end: float, cause: str | None) -> None:
        """Launch an observer with the data as it stands, until `end` (its own budget or what is left
        of its plugin's for this event, whichever ends first); its answer is judged when it comes.
        `cause`: the other plugin whose doing the event is, which has only a share of its slots."""
        charged = self._observing.full(reg.plugin_id, cause)
        if charged is not None:
            self._drop(reg, charged)
            return
        token = _reentry.set(active | reg.running if active else reg.running)
        try:
            result: Any = reg.handler(ctx)  # a worker proxy sends the request here and hands back its future
            if result is None or type(result) is HookResult or not _awaitable(result):
                self._observed(reg, result, outcome)  # a synchronous built-in has answered already
                return
            # (a coroutine becomes a task here, inside the re-entry mark, so it inherits it)
            fut: asyncio.Future[Any] = asyncio.ensure_future(result)
        except Exception as exc:
            self._failed(reg, exc, outcome)
            return
        finally:
            _reentry.reset(token)
        self._observing.watch(reg.plugin_id, fut, end, functools.partial(self._observer_done, reg, outcome), cause)
        if outcome.observing is None:
            outcome.observing = [fut]
        else:
            outcome.observing.append(fut)

    def _observer_done(self, reg: Registration, outcome: HookOutcome, fut: asyncio.Future[Any], expired: bool) -> None:
        if fut.cancelled():
            if expired:
                self._failed(reg, TimeoutError(), outcome)
            return  # otherwise cancelled by the host's own shutdown: nobody's failure
        exc = fut.exception()
        if exc is None:
            self._observed(reg, fut.result(), outcome)
        elif isinstance(exc, Exception):
            self._failed(reg, exc, outcome)

    def _observed(self, reg: Registration, result: Any, outcome: HookOutcome) -> None:
        """An observer's answer: a success or its plugin's error; data or stop it returned is ignored
        (it lacks `hooks:modify`) and it is told so once."""
        if result is None:
            self._succeeded(reg)
        elif not isinstance(result, HookResult):
            self._error(reg, outcome, f"handler returned {type(result).__name__}, expected HookResult or None")
        elif result.error is not None:
            self._error(reg, outcome, result.error)
        else:
            self._succeeded(reg)
            if result.data is not None or result.stop:
                what = " and ".join(w for w, given in (("data", result.data is not None), ("stop", result.stop))
                                    if given)
                self._tell_once(reg.plugin_id, "observes", f"hook {reg.event}: ",
                                f"returned {what} ignored: this plugin only observes events; rewriting data or "
                                "halting an event needs the permission 'hooks:modify' (said once)")

    def _drop(self, reg: Registration, charged: str) -> None:
        """The event is not delivered to `reg`; the drop is `charged`'s: the observer's own, at its
        cap, or the plugin that caused the event, at its share of the observer's slots."""
        self._observing.refuse(charged)
        if self._on_dropped is not None:
            self._on_dropped(charged)
        if charged == reg.plugin_id:
            self._tell_once(charged, "dropped", f"hook {reg.event}: ",
                            f"events dropped: {self._limits.observers_pending} invocations of this plugin's "
                            "handlers are still unanswered (said once)")
        else:
            self._tell_once(charged, "crowding", f"hook {reg.event}: ",
                            f"events this plugin caused were dropped for plugin {reg.plugin_id}: at most "
                            f"{self._limits.observers_per_cause} of another plugin's handler invocations may "
                            "wait on events one plugin caused (said once)")

    def _chain_spent(self, reg: Registration, marks: list[tuple[str, float]], now: float,
                     outcome: HookOutcome) -> bool:
        """The chain's budget is gone: the remaining modifiers of this event are skipped (True), and
        the plugin whose modifiers took most of it is charged a timeout, once per event. That is
        not necessarily the plugin whose handler was running when the budget ran out (cut short,
        it is then not charged: it may be the victim of those before it); its request no longer counts
        on its channel's books once the cut cancelled it."""
        spender = _spender(marks, now)
        if self._chain_logs.allow():
            log.warning("hook %s: chain budget (%.1f s) spent, mostly by plugin %s; handlers from plugin %s on "
                        "skipped for this event", reg.event, self._limits.chain_budget, spender, reg.plugin_id)
        if marks:
            outcome.timed_out.append(spender)
            if self._on_timeout is not None:
                self._on_timeout(spender)
        return True

    def _succeeded(self, reg: Registration) -> None:
        if self._on_success is not None:
            self._on_success(reg.plugin_id)

    def _tell_once(self, plugin_id: str, what: str, context: str, text: str) -> None:
        if (plugin_id, what) not in self._told:
            self._told.add((plugin_id, what))
            self._relay(plugin_id, "warning", context, text)

    def context_for(self, plugin_id: str, events: Collection[str]) -> contextvars.Context:
        """A context in which work done on behalf of `plugin_id` runs (a worker's capability call:
        it arrives over a channel, so it does not inherit a handler's context): the events it fires
        are `plugin_id`'s doing (their cause), and do not reach its handlers for `events` (those in
        flight to it) again."""
        ctx = contextvars.copy_context()
        ctx.run(_cause.set, plugin_id)
        if events:
            ctx.run(_reentry.set, _reentry.get() | {(plugin_id, e) for e in events})
        return ctx

    def close(self) -> None:
        self._deadlines.close()

    def _applied(self, reg: Registration, result: HookResult, outcome: HookOutcome) -> bool:
        """Apply a handler's data and stop to the outcome; True when the chain ends here.

        Only modifiers get here (a handler without `hooks:modify` observes, beside the chain: see
        `_observed`). Its data must pass the event's payload check before anyone sees it; data
        that does not is the producer's failure (its handler error), and on an event whose caller
        acts on the data (a send, a delivery) it also ends the chain as a veto: the rewrite was
        meant to replace what would otherwise go out, so nothing goes out (fail closed)."""
        if result.data is None and not result.stop:
            self._succeeded(reg)
            return False
        if result.data is not None:
            wrong = payloads.problem(reg.event, result.data, outcome.data)
            if wrong is not None:
                self._error(reg, outcome, f"returned data refused: {wrong}")
                if reg.event in VETO_EVENTS:
                    outcome.malformed = wrong
                    self._stop(reg, outcome)
                    return True
                return False
            outcome.data = result.data
        self._succeeded(reg)
        if result.stop:
            self._stop(reg, outcome)
            return True
        return False

    @staticmethod
    def _stop(reg: Registration, outcome: HookOutcome) -> None:
        outcome.stopped = True
        outcome.stopped_by = reg.plugin_id
        outcome.vetoed = reg.event in VETO_EVENTS

    def _failed(self, reg: Registration, exc: Exception, outcome: HookOutcome) -> None:
        if isinstance(exc, WorkerGone):
            return  # a dead worker's handler resolves to continue; it is no success either
        if isinstance(exc, TimeoutError):
            outcome.timed_out.append(reg.plugin_id)
            self._log_timeout(reg)
            if self._on_timeout is not None:
                self._on_timeout(reg.plugin_id)
            return
        self._error(reg, outcome, f"{type(exc).__name__}: {exc}")

    def _error(self, reg: Registration, outcome: HookOutcome, message: str) -> None:
        printed = self._relay(reg.plugin_id, "warning", f"hook {reg.event} failed: ", message)
        outcome.errors.append((reg.plugin_id, printed))
        if self._on_error is not None:
            self._on_error(reg.plugin_id, f"hook {reg.event}: {printed}")

    def _log_timeout(self, reg: Registration) -> None:
        limiter = self._timeout_logs.setdefault(reg.plugin_id, RateLimiter(1, 10.0))
        if limiter.allow():
            log.warning(
                "hook %s: handler of plugin %s ran past its budget; treated as continue", reg.event, reg.plugin_id
            )
