"""Bytes of response bodies the host may hold for `net.fetch` at once (issue 12: amplification
through payload size).

Fetch slots bound how many fetches run, not what they cost: a body is read whole before it is
handed to the worker, and on its way it exists two or three times (the chunks read, the joined
bytes, the decoded text, the encoded answer). Sixteen fetches of a 10 MiB body held the host to
about 360 MB more. So a fetch reserves its body's bytes before reading it: the length the server
declares, or the body cap when it declares none (the host cannot know it before reading).

`BodyBudget` owns the reservations, one per fetch, whole at once, never grown: a fetch that waits
holds no bytes, so waiters cannot deadlock each other. A reservation first takes the plugin's own
share (`fetch_body_bytes_per_plugin`: past it a plugin queues behind its own fetches only), then
the host's (`fetch_body_bytes_in_flight`, in order, a smaller one that fits first); both waits
count against the fetch's own timeout. A reservation larger than a pool is clamped to the pool
(it then waits for the whole pool). The cost of knowing no better: a body with no declared length
reserves the whole cap, so a plugin runs at most two such fetches at once under the default share.
This module knows no HTTP; `plugbox.net.fetch` decides what to reserve and when.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["BodyBudget", "BytePool"]


class BytePool:
    """`capacity` bytes handed out whole; `reserve` waits until its size fits. Waiters are served
    in the order they asked, except that one that fits goes before a larger one that does not: a
    two-byte answer does not queue behind a 10 MiB body (a large one then waits for room, which
    small ones, being small, soon leave)."""

    __slots__ = ("_waiters", "capacity", "reserved")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.reserved = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def idle(self) -> bool:
        return self.reserved == 0 and not self._waiters

    async def reserve(self, size: int) -> int:
        """Reserve `size` bytes (at most the capacity); the bytes reserved, to give back to `release`."""
        size = min(size, self.capacity)
        if self.reserved + size <= self.capacity:
            self.reserved += size
            return size
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, fut)
        self._waiters.append(entry)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(size)  # granted as the waiter was cancelled: give it back
            else:
                self._waiters.remove(entry)
                self._grant()  # a smaller one behind it may fit now
            raise
        return size

    def release(self, size: int) -> None:
        self.reserved -= size
        self._grant()

    def _grant(self) -> None:
        if not self._waiters:
            return
        waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        for size, fut in self._waiters:
            if self.reserved + size <= self.capacity:
                self.reserved += size
                fut.set_result(None)
            else:
                waiting.append((size, fut))
        self._waiters = waiting


class BodyBudget:
    """The host's pool of body bytes and each plugin's share of it."""

    def __init__(self, host_bytes: int, plugin_bytes: int) -> None:
        self._host = BytePool(host_bytes)
        self._plugin_bytes = plugin_bytes
        self._plugins: dict[str, BytePool] = {}

    @property
    def reserved(self) -> int:
        """Bytes reserved host-wide (for metrics and tests)."""
        return self._host.reserved

    def reserved_by(self, plugin_id: str) -> int:
        pool = self._plugins.get(plugin_id)
        return 0 if pool is None else pool.reserved

    @asynccontextmanager
    async def hold(self, plugin_id: str, size: int) -> AsyncIterator[None]:
        """Hold `size` bytes of `plugin_id`'s share and of the host's pool for the block."""
        pool = self._plugins.get(plugin_id)
        if pool is None:
            pool = self._plugins[plugin_id] = BytePool(self._plugin_bytes)
        try:
            mine = await pool.reserve(size)
            try:
                ours = await self._host.reserve(size)
                try:
                    yield
                finally:
                    self._host.release(ours)
            finally:
                pool.release(mine)
        finally:
            if pool.idle:
                self._plugins.pop(plugin_id, None)
