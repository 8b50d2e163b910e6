"""Slots for calls that hold a shared, scarce thing while they run (outbound fetches, the engine's
connections), shared fairly among the plugins that make them.

`FairSlots(total, per_plugin, ceiling=..., refuse_past_own=...)`; `async with slots.hold(plugin):`
runs the block in one slot. Hand-written: the rule below, over asyncio futures, is ours.

The rule, in full:

- a plugin holds at most `per_plugin` slots. Past that its next call waits behind its own calls
  (only its own slot freeing lets it in), or, with `refuse_past_own`, it is refused at once when it
  already has `per_plugin` calls holding *or waiting* (a CapabilityError the caller words);
- while fewer than `total` slots are held host-wide, a plugin under its own bound takes one;
- past `total`, only a plugin holding less than its fair share (`total` over the plugins holding
  slots, itself counted; at least one) still takes one at once, up to `ceiling` (>= total). A plugin
  holding its share or more waits. So plugins that filled the host between them cannot make a
  newcomer wait for their slow calls, and the host never holds more than `ceiling`;
- a freed slot goes to the waiter whose plugin holds the fewest, the oldest first among equals,
  so a plugin with a long queue of its own cannot keep a neighbour's call behind it.

`ceiling == total` (the default) is a hard bound: past it everyone waits (fetch's slots); a larger
ceiling trades headroom for promptness (the engine's, see `plugbox.capabilities.messages`).
A wait is not bounded here: the caller's own timeout cancels it, and a cancelled waiter leaves no
trace (a slot granted to it as it was cancelled is handed on). Counts per plugin (`waited`,
`refused`) and the peak are kept for tests, metrics and the bench.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from plugbox.errors import CapabilityError

__all__ = ["FairSlots"]


@dataclass(slots=True)
class _Waiter:
    seq: int
    plugin_id: str
    fut: asyncio.Future[None]


class FairSlots:
    def __init__(
        self,
        total: int,
        per_plugin: int,
        *,
        ceiling: int | None = None,
        refuse_past_own: bool = False,
        refusal: Callable[[str, int], str] | None = None,
    ) -> None:
        """`refusal(plugin, calls)`: the message of a refusal under `refuse_past_own`."""
        self.total = total
        self.per_plugin = per_plugin
        self.ceiling = total if ceiling is None else max(ceiling, total)
        self._refuse_past_own = refuse_past_own
        self._refusal = refusal or (lambda pid, n: f"plugin {pid!r} already has {n} calls in flight")
        self._held: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.waited: Counter[str] = Counter()  # plugin -> calls that had to wait for a slot
        self.refused: Counter[str] = Counter()  # plugin -> calls refused at once (refuse_past_own)

    @property
    def queued(self) -> int:
        """Calls waiting for a slot."""
        return len(self._waiters)

    def held_by(self, plugin_id: str) -> int:
        return self._held.get(plugin_id, 0)

    def in_flight_of(self, plugin_id: str) -> int:
        """The plugin's calls holding or waiting for a slot."""
        return self._held.get(plugin_id, 0) + self._waiting.get(plugin_id, 0)

    @asynccontextmanager
    async def hold(self, plugin_id: str) -> AsyncIterator[None]:
        await self._acquire(plugin_id)
        try:
            yield
        finally:
            self._release(plugin_id)

    def _may_take(self, plugin_id: str) -> bool:
        held = self._held.get(plugin_id, 0)
        if held >= self.per_plugin:
            return False
        if self.in_flight < self.total:
            return True
        if self.in_flight >= self.ceiling:
            return False
        holders = len(self._held) + (0 if held else 1)
        return held < max(1, self.total // holders)

    def _take(self, plugin_id: str) -> None:
        self._held[plugin_id] = self._held.get(plugin_id, 0) + 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    async def _acquire(self, plugin_id: str) -> None:
        if self._refuse_past_own and (mine := self.in_flight_of(plugin_id)) >= self.per_plugin:
            self.refused[plugin_id] += 1
            raise CapabilityError(self._refusal(plugin_id, mine))
        # A waiter the rule lets in is granted as soon as it may be (`_grant` runs on every change
        # that frees room), so none is passed over here.
        if self._may_take(plugin_id):
            self._take(plugin_id)
            return
        self.waited[plugin_id] += 1
        waiter = _Waiter(next(self._seq), plugin_id, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self._waiting[plugin_id] = self._waiting.get(plugin_id, 0) + 1
        try:
            await waiter.fut
        except BaseException:
            if waiter.fut.done() and not waiter.fut.cancelled():
                self._release(plugin_id)  # granted as it was cancelled: hand the slot on
            else:
                self._waiters.remove(waiter)  # (who may take a slot does not depend on waiters)
                self._unwait(plugin_id)
            raise

    def _unwait(self, plugin_id: str) -> None:
        left = self._waiting[plugin_id] - 1
        if left:
            self._waiting[plugin_id] = left
        else:
            del self._waiting[plugin_id]

    def _release(self, plugin_id: str) -> None:
        left = self._held[plugin_id] - 1
        if left:
            self._held[plugin_id] = left
        else:
            del self._held[plugin_id]
        self.in_flight -= 1
        self._grant()

    def _grant(self) -> None:
        """Hand free slots to the waiters the rule lets in: the plugin holding the fewest first."""
        while self._waiters:
            best: _Waiter | None = None
            seen: set[str] = set()
            for waiter in self._waiters:  # in arrival order: a plugin's first waiter is its oldest
                pid = waiter.plugin_id
                if pid in seen or waiter.fut.done():  # done: cancelled, its task not yet told
                    continue
                seen.add(pid)
                if (self._may_take(pid)
                        and (best is None or self._held.get(pid, 0) < self._held.get(best.plugin_id, 0))):
                    best = waiter
            if best is None:
                return
            self._waiters.remove(best)
            self._unwait(best.plugin_id)
            self._take(best.plugin_id)
            best.fut.set_result(None)
