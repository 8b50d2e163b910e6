"""The hook bus (SPEC §4): who handles which event, in which order, and what comes out.

`HookBus.execute` is the whole call loop: handlers run in ascending priority (ties in registration
order), each sees the data the previous one returned, `stop` ends the chain but its data applies,
a handler that raises, returns an error or runs past its budget is logged and skipped. Only a
plugin holding `hooks:modify` changes anything: its returned data must pass the event's payload
check (`plugbox.payloads`) before the next handler sees it; every other handler observes. Whether a
handler is in-process (built-in) or a proxy into a worker makes no difference here: every handler
takes a HookContext and returns a result or an awaitable of one, called under the plugin's budget.

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

import contextvars
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
from plugbox.events import EVENTS, VETO_EVENTS
from plugbox.logrelay import sanitise
from plugbox.sdk import HookContext, HookResult
from plugbox.settings import Settings

__all__ = ["Handler", "HookBus", "HookOutcome", "Registration"]

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


@dataclass(frozen=True, slots=True)
class Registration:
    plugin_id: str
    event: str
    handler: Handler
    priority: int
    seq: int
    running: frozenset[tuple[str, str]]  # the re-entry mark while this handler runs: {(plugin_id, event)}


class HookOutcome(msgspec.Struct):
    """What `execute` produced. `stopped` is true when a handler stopped the chain; `vetoed` when
    that happened on an event where stop means veto (`message:sending`, `webhook:before`), or when
    a handler allowed to rewrite such an event returned data of the wrong shape (`malformed` then
    says what was wrong: the caller refuses rather than act on data the rewrite meant to replace).
    (A msgspec Struct rather than a dataclass: one is built per dispatch, at a third of the cost.)"""

    event: str
    data: Any
    stopped: bool = False
    stopped_by: str | None = None
    vetoed: bool = False
    malformed: str | None = None
    errors: list[tuple[str, str]] = msgspec.field(default_factory=list)
    timed_out: list[str] = msgspec.field(default_factory=list)


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
        relay: Relay | None = None,
        deadlines: Deadlines | None = None,
        may_modify: Callable[[str], bool] = _observe_only,
    ) -> None:
        self._budget = budget
        self._deadlines = deadlines if deadlines is not None else Deadlines()
        self._scope = scope  # the plugin's config for a session, or None: that session is not its business
        self._may_modify = may_modify  # the plugin holds `hooks:modify`: its data and stop apply
        self._told: set[str] = set()  # plugins told once (in their log) that their data and stop were ignored
        self._on_timeout = on_timeout
        self._on_success = on_success
        self._on_error = on_error  # told (plugin id, message as relayed) of each handler error
        self.on_chain = on_chain  # told (event, seconds) after each execute; None: nothing is timed
        # Awaited with each chain's outcome before `execute` returns (outbound webhooks queue it
        # there, so the event's producer goes on only once the queue has it); None: nothing is told.
        self.on_outcome: Callable[[HookOutcome, str | None], Awaitable[None]] | None = None
        self._by_event: dict[str, tuple[Registration, ...]] = {}  # replaced, never mutated
        self._seq = itertools.count()
        self._timeout_logs: dict[str, RateLimiter] = {}
        # A handler's error is the plugin's own text: it goes through that plugin's log relay
        # (its rate limit, cap, redaction, escaping), never straight to the host log.
        self._relay = relay or _plain_log

    def register(self, plugin_id: str, event: str, handler: Handler, priority: int = 100) -> bool:
        """Add a handler. An unknown event is refused with a warning (returns False)."""
        if event not in EVENTS:
            self._relay(plugin_id, "warning", "refused hook for unknown event: ", event)
            return False
        regs = [*self._by_event.get(event, ()), Registration(plugin_id, event, handler, priority, next(self._seq),
                                                            frozenset({(plugin_id, event)}))]
        self._by_event[event] = tuple(sorted(regs, key=lambda r: (r.priority, r.seq)))
        return True

    def unregister_plugin(self, plugin_id: str) -> int:
        self._told.discard(plugin_id)
        removed = 0
        for event, regs in self._by_event.items():
            kept = tuple(r for r in regs if r.plugin_id != plugin_id)
            removed += len(regs) - len(kept)
            self._by_event[event] = kept
        return removed

    def handlers(self, event: str) -> list[Registration]:
        return list(self._by_event.get(event, ()))

    async def execute(
        self, event: str, data: Any, session_id: str | None = None, source: str = "host", *, plugin: str | None = None
    ) -> HookOutcome:
        """Run the chain. With `plugin`, only that plugin's handlers run (an event about one
        plugin's own affairs, such as its ingress errors, is nobody else's business)."""
        on_chain = self.on_chain
        started = time.perf_counter() if on_chain is not None else 0.0
        outcome = HookOutcome(event=event, data=data)
        active = _reentry.get()
        now = datetime.now(UTC)
        for reg in self._by_event.get(event, ()):
            if plugin is not None and reg.plugin_id != plugin:
                continue
            if (reg.plugin_id, event) in active:
                continue
            config = self._scope(reg.plugin_id, session_id)
            if config is None:
                continue
            ctx = HookContext(event=event, data=outcome.data, session_id=session_id, timestamp=now,
                              source=source, config=dict(config))  # the handler's own copy
            token = _reentry.set(active | reg.running if active else reg.running)
            try:
                with self._deadlines.within(self._budget(reg.plugin_id)):  # the hook budget
                    result: Any = reg.handler(ctx)
                    if result is not None and type(result) is not HookResult and _awaitable(result):
                        result = await result
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

    def context_for(self, plugin_id: str, events: Collection[str]) -> contextvars.Context:
        """A context in which work done on behalf of `plugin_id`'s handlers for `events` runs: the
        hooks it fires do not reach those handlers again. For callers whose work does not inherit
        the handler's own context (a worker's capability calls arrive over a channel)."""
        ctx = contextvars.copy_context()
        if events:
            ctx.run(_reentry.set, _reentry.get() | {(plugin_id, e) for e in events})
        return ctx

    def close(self) -> None:
        self._deadlines.close()

    def _applied(self, reg: Registration, result: HookResult, outcome: HookOutcome) -> bool:
        """Apply a handler's data and stop to the outcome; True when the chain ends here.

        Without `hooks:modify` the handler only observes: its answer is ignored and it is told so
        once. With it, its data must pass the event's payload check before anyone sees it; data
        that does not is the producer's failure (its handler error), and on an event whose caller
        acts on the data (a send, a delivery) it also ends the chain as a veto: the rewrite was
        meant to replace what would otherwise go out, so nothing goes out (fail closed)."""
        if result.data is None and not result.stop:
            self._succeeded(reg)
            return False
        if not self._may_modify(reg.plugin_id):
            self._succeeded(reg)
            self._tell_once(reg, result)
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

    def _succeeded(self, reg: Registration) -> None:
        if self._on_success is not None:
            self._on_success(reg.plugin_id)

    def _tell_once(self, reg: Registration, result: HookResult) -> None:
        if reg.plugin_id in self._told:
            return
        self._told.add(reg.plugin_id)
        what = " and ".join(w for w, given in (("data", result.data is not None), ("stop", result.stop)) if given)
        self._relay(reg.plugin_id, "warning", f"hook {reg.event}: ",
                    f"returned {what} ignored: this plugin only observes events; rewriting data or halting an "
                    "event needs the permission 'hooks:modify' (said once)")


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
