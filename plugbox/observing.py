"""Hook handlers that only observe, running beside the chain (SPEC §4): what the bus launched and
has not heard back from.

An observer cannot change an event's outcome, so the bus does not wait for it: it calls the handler
(a worker proxy sends its request there and hands back a future; a built-in's coroutine becomes a
task) and gives the future to `Observing.watch`, which puts a deadline on it and, once it is done or
cut, calls the bus back to charge what happened to the plugin as if it had waited. A plugin may leave
`cap` invocations unanswered; past that the bus drops the event for it (`refuse`), so a slow observer
cannot make the host hold more and more of its work. Of those, at most `per_cause` may be for events
another plugin caused (`cause`: its sends reach every observer of `message:sent`); past that share
such an event is dropped and the cause charged, so one plugin's flood cannot fill another's slots.
Many plugins at their caps together would multiply them, so the host has a bound as well (`total`),
shared fairly: once that many are unanswered host-wide, a plugin with its fair share (the bound over
the plugins with any unanswered) or more is refused, one with less still gets the event. The host
then holds at most twice the bound, and a prompt observer never loses an event to slow neighbours.

Owns those futures until they are done and counts them per plugin (and per cause); must not judge an
answer, apply data or stop, nor know anything of a plugin but its id.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from plugbox.deadlines import Deadlines

__all__ = ["Observing"]

# Called once per watched future when it is done: (the future, whether its deadline cut it).
Judge = Callable[["asyncio.Future[Any]", bool], None]


class Observing:
    def __init__(self, deadlines: Deadlines, cap: int, per_cause: int | None = None,
                 total: int | None = None) -> None:
        self._deadlines = deadlines
        self.cap = cap
        self.per_cause = cap if per_cause is None else per_cause
        self.total = total  # None: no host-wide bound
        self._pending: dict[str, int] = {}
        self._caused: dict[tuple[str, str], int] = {}  # (observer, the plugin that caused the event)
        self._dropped: dict[str, int] = {}
        self._all: set[asyncio.Future[Any]] = set()

    def pending(self, plugin_id: str) -> int:
        """The plugin's observer invocations launched and not yet answered."""
        return self._pending.get(plugin_id, 0)

    def dropped(self, plugin_id: str) -> int:
        """Events the plugin did not get because it was at its cap."""
        return self._dropped.get(plugin_id, 0)

    def full(self, plugin_id: str, cause: str | None = None) -> str | None:
        """Who an invocation of `plugin_id` for an event `cause` caused would overrun: the plugin,
        at its cap or at its fair share of a full host; the cause, at its share of the plugin's
        slots; None when there is room."""
        mine = self._pending.get(plugin_id, 0)
        if mine >= self.cap:
            return plugin_id
        if self.total is not None and len(self._all) >= self.total:
            sharers = len(self._pending) + (0 if mine else 1)
            if mine >= self.total // sharers:
                return plugin_id
        if cause is not None and self._caused.get((plugin_id, cause), 0) >= self.per_cause:
            return cause
        return None

    def refuse(self, charged: str) -> None:
        """Count an event dropped, against the plugin `full` named."""
        self._dropped[charged] = self._dropped.get(charged, 0) + 1

    def watch(self, plugin_id: str, fut: asyncio.Future[Any], end: float, judge: Judge,
              cause: str | None = None) -> None:
        """Own `fut` until it is done or the clock reaches `end` (then it is cancelled); either way
        `judge` is told. `cause`: the plugin whose doing the event was, if another one's."""
        self._pending[plugin_id] = self._pending.get(plugin_id, 0) + 1
        if cause is not None:
            key = (plugin_id, cause)
            self._caused[key] = self._caused.get(key, 0) + 1
        self._all.add(fut)
        deadline = self._deadlines.watch(fut, end)
        fut.add_done_callback(functools.partial(self._done, plugin_id, cause, judge, deadline))

    def _done(self, plugin_id: str, cause: str | None, judge: Judge, deadline: Any, fut: asyncio.Future[Any]) -> None:
        self._all.discard(fut)
        _release(self._pending, plugin_id)
        if cause is not None:
            _release(self._caused, (plugin_id, cause))
        judge(fut, deadline.expired)

    async def settled(self) -> None:
        """Wait until nothing watched is unanswered."""
        while self._all:
            await asyncio.wait(list(self._all))
            await asyncio.sleep(0)  # (their done callbacks, which judge them, run first)


def _release(counts: dict[Any, int], key: Any) -> None:
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
