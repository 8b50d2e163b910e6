"""The hook bus (SPEC §4): who handles which event, in which order, and what comes out.

`HookBus.execute` is the whole call loop: handlers run in ascending priority (ties in registration
order), each sees the data the previous one returned, `stop` ends the chain but its data applies,
a handler that raises, returns an error or runs past its budget is logged and skipped. Whether a
handler is in-process (built-in) or a proxy into a worker makes no difference here: both are
awaitables under the same budget. The bus owns no plugin state; it asks the loader, through
callbacks, which plugins are in scope for a session and what their per-session config is.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import msgspec

from plugbox._ratelimit import RateLimiter
from plugbox.errors import WorkerGone
from plugbox.events import EVENTS, VETO_EVENTS
from plugbox.logrelay import sanitise
from plugbox.sdk import HookContext, HookResult
from plugbox.settings import Settings

__all__ = ["HookBus", "HookOutcome", "Registration", "reentry_scope"]

log = logging.getLogger("plugbox.hooks")

Handler = Callable[[HookContext], Awaitable[HookResult | None] | HookResult | None]
# A worker proxy (`self_timed`): the context's fields as they go on the wire -> a future of the result.
WorkerHook = Callable[[str, Any, "str | None", datetime, str, "dict[str, Any]"], Awaitable["HookResult | None"]]

# Prints plugin text on a plugin's behalf: (plugin_id, level, host context, plugin text) -> the
# plugin text as sanitised (what an outcome keeps). The context is the host's own words.
Relay = Callable[[str, str, str, str], str]
_MAX_CHARS = Settings().log_line_max_chars

# (plugin_id, event) pairs whose handler is running in this task: a capability call made from a
# handler that fires the same event again must not re-enter that handler.
_reentry: contextvars.ContextVar[frozenset[tuple[str, str]]] = contextvars.ContextVar(
    "plugbox_hook_reentry", default=frozenset()
)


@contextlib.contextmanager
def reentry_scope(plugin_id: str, event: str | None) -> Iterator[None]:
    """Mark `plugin_id` as handling `event` for the duration (used by the bridge router, whose
    capability calls arrive from a worker and so do not inherit the handler's context)."""
    if event is None:
        yield
        return
    token = _reentry.set(_reentry.get() | {(plugin_id, event)})
    try:
        yield
    finally:
        _reentry.reset(token)


@dataclass(frozen=True, slots=True)
class Registration:
    plugin_id: str
    event: str
    handler: Handler | WorkerHook
    priority: int
    seq: int
    self_timed: bool = False  # a worker proxy: enforces the budget itself and guards re-entry on the wire


class HookOutcome(msgspec.Struct):
    """What `execute` produced. `stopped` is true when a handler stopped the chain; `vetoed` when
    that happened on an event where stop means veto (`message:sending`, `webhook:before`).
    (A msgspec Struct rather than a dataclass: one is built per dispatch, at a third of the cost.)"""

    event: str
    data: Any
    stopped: bool = False
    stopped_by: str | None = None
    vetoed: bool = False
    errors: list[tuple[str, str]] = msgspec.field(default_factory=list)
    timed_out: list[str] = msgspec.field(default_factory=list)


def accepts(event: str, data: Any) -> bool:
    """Per-event acceptance of a handler's returned data."""
    if event in ("message:received", "message:sent"):
        return isinstance(data, dict) and isinstance(data.get("id"), str) and isinstance(data.get("chatId"), str)
    if event == "webhook:before":
        return isinstance(data, dict) and isinstance(data.get("payload"), dict)
    return True


def _plain_log(plugin_id: str, level: str, context: str, text: str) -> str:
    """The relay of a bus without plugins' relays (unit tests): capped and escaped, not rate-limited."""
    text = sanitise(text, (), _MAX_CHARS)
    log.warning("plugin %s: %s%s", plugin_id, context, text)
    return text


def _in_scope_without_config(plugin_id: str, session_id: str | None) -> dict[str, Any] | None:
    return {}


class HookBus:
    def __init__(
        self,
        *,
        budget: Callable[[str], float],
        scope: Callable[[str, str | None], dict[str, Any] | None] = _in_scope_without_config,
        on_timeout: Callable[[str], None] | None = None,
        on_success: Callable[[str], None] | None = None,
        on_chain: Callable[[str, float], None] | None = None,
        relay: Relay | None = None,
    ) -> None:
        self._budget = budget
        self._scope = scope  # the plugin's config for a session, or None: that session is not its business
        self._on_timeout = on_timeout
        self._on_success = on_success
        self.on_chain = on_chain  # told (event, seconds) after each execute; None: nothing is timed
        self._by_event: dict[str, tuple[Registration, ...]] = {}  # replaced, never mutated
        self._seq = itertools.count()
        self._timeout_logs: dict[str, RateLimiter] = {}
        # A handler's error is the plugin's own text: it goes through that plugin's log relay
        # (its rate limit, cap, redaction, escaping), never straight to the host log.
        self._relay = relay or _plain_log

    def register(
        self, plugin_id: str, event: str, handler: Handler | WorkerHook, priority: int = 100, *,
        self_timed: bool = False
    ) -> bool:
        """Add a handler. An unknown event is refused with a warning (returns False).

        `self_timed` handlers (worker proxies) raise TimeoutError themselves once the plugin's hook
        budget has passed, and carry the re-entry guard to the worker in each capability call."""
        if event not in EVENTS:
            self._relay(plugin_id, "warning", "refused hook for unknown event: ", event)
            return False
        regs = [*self._by_event.get(event, ()), Registration(plugin_id, event, handler, priority, next(self._seq),
                                                            self_timed)]
        self._by_event[event] = tuple(sorted(regs, key=lambda r: (r.priority, r.seq)))
        return True

    def unregister_plugin(self, plugin_id: str) -> int:
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
            try:
                if reg.self_timed:
                    # A worker proxy takes the context's fields as they go on the wire and answers
                    # with a future of its HookResult, keeping its own budget: awaited here, not
                    # in a wrapper coroutine, and no HookContext built just to be taken apart.
                    proxy: WorkerHook = reg.handler  # type: ignore[assignment]  # (no cast() call here)
                    result = await proxy(event, outcome.data, session_id, now, source, config)
                else:
                    ctx = HookContext(event=event, data=outcome.data, session_id=session_id, timestamp=now,
                                      source=source, config=dict(config))  # the handler's own copy
                    result = await self._in_process(reg, ctx)
            except Exception as exc:
                self._failed(reg, exc, outcome)
                continue
            if self._on_success is not None:
                self._on_success(reg.plugin_id)
            if result is None:
                continue
            if not isinstance(result, HookResult):
                self._error(reg, outcome, f"handler returned {type(result).__name__}, expected HookResult or None")
                continue
            if result.error is not None:
                self._error(reg, outcome, result.error)
                continue
            if result.data is not None:
                if accepts(event, result.data):
                    outcome.data = result.data
                else:
                    self._relay(reg.plugin_id, "warning", f"hook {event}: ", "returned data of the wrong shape")
            if result.stop:
                outcome.stopped = True
                outcome.stopped_by = reg.plugin_id
                outcome.vetoed = event in VETO_EVENTS
                break
        if on_chain is not None:
            on_chain(event, time.perf_counter() - started)
        return outcome

    async def _in_process(self, reg: Registration, ctx: HookContext) -> Any:
        """A built-in's handler: sync or async, under the budget, inside the re-entry guard."""
        token = _reentry.set(_reentry.get() | {(reg.plugin_id, reg.event)})
        try:
            async with asyncio.timeout(self._budget(reg.plugin_id)):
                result = cast(Handler, reg.handler)(ctx)
                if inspect.isawaitable(result):
                    result = await result
                return result
        finally:
            _reentry.reset(token)

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

    def _log_timeout(self, reg: Registration) -> None:
        limiter = self._timeout_logs.setdefault(reg.plugin_id, RateLimiter(1, 10.0))
        if limiter.allow():
            log.warning(
                "hook %s: handler of plugin %s ran past its budget; treated as continue", reg.event, reg.plugin_id
            )
