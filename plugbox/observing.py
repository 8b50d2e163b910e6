"""Hook handlers that only observe, running beside the chain (SPEC §4): what the bus launched and
has not heard back from.

An observer cannot change an event's outcome, so the bus does not wait for it: it calls the handler
(a worker proxy sends its request there and hands back a future; a built-in's coroutine becomes a
task) and gives the future to `Observing.watch`, which puts a deadline on it and, once it is done or
cut, calls the bus back to charge what happened to the plugin as if it had waited. A plugin may leave
`cap` invocations unanswered; past that the bus drops the event for it (`refuse`), so a slow observer
cannot make the host hold more and more of its work.

Owns those futures until they are done and counts them per plugin; must not judge an answer, apply
data or stop, nor know anything of a plugin but its id.
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
    def __init__(self, deadlines: Deadlines, cap: int) -> None:
        self._deadlines = deadlines
        self.cap = cap
        self._pending: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._all: set[asyncio.Future[Any]] = set()

    def pending(self, plugin_id: str) -> int:
        """The plugin's observer invocations launched and not yet answered."""
        return self._pending.get(plugin_id, 0)

    def dropped(self, plugin_id: str) -> int:
        """Events the plugin did not get because it was at its cap."""
        return self._dropped.get(plugin_id, 0)

    def full(self, plugin_id: str) -> bool:
        return self._pending.get(plugin_id, 0) >= self.cap

    def refuse(self, plugin_id: str) -> None:
        """Count an event dropped for the plugin at its cap."""
        self._dropped[plugin_id] = self._dropped.get(plugin_id, 0) + 1

    def watch(self, plugin_id: str, fut: asyncio.Future[Any], end: float, judge: Judge) -> None:
        """Own `fut` until it is done or the clock reaches `end` (then it is cancelled); either way
        `judge` is told."""
        self._pending[plugin_id] = self._pending.get(plugin_id, 0) + 1
        self._all.add(fut)
        deadline = self._deadlines.watch(fut, end)
        fut.add_done_callback(functools.partial(self._done, plugin_id, judge, deadline))

    def _done(self, plugin_id: str, judge: Judge, deadline: Any, fut: asyncio.Future[Any]) -> None:
        self._all.discard(fut)
        left = self._pending.get(plugin_id, 1) - 1
        if left > 0:
            self._pending[plugin_id] = left
        else:
            self._pending.pop(plugin_id, None)
        judge(fut, deadline.expired)

    async def settled(self) -> None:
        """Wait until nothing watched is unanswered."""
        while self._all:
            await asyncio.wait(list(self._all))
            await asyncio.sleep(0)  # (their done callbacks, which judge them, run first)
