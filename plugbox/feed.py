"""`LiveFeed`: what happens to plugins, as it happens, for whoever watches live (the API's event
stream, which the dashboard and `plugins logs --follow` read): every relayed log line and every
failure noted, each tagged with the plugin id.

The feed is told synchronously on the event loop (by the plugins' log relays and as a host
observer) and hands each event to every subscriber's bounded queue without waiting. A subscriber
that does not keep up loses the newest events and is told how many, so a slow reader never holds
host memory or slows a plugin down. The feed keeps no history: the recent lines are the relay's
(`PluginView.logs`); a subscriber reads those first, then the feed.

Owns the subscriptions; must not sanitise (what reaches it was already sanitised by the relay) nor
know anything of a plugin but its id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plugbox.observer import HostObserver

__all__ = ["FeedEvent", "LiveFeed", "Subscription"]


@dataclass(frozen=True, slots=True)
class FeedEvent:
    kind: str  # "log" or "failure"
    plugin_id: str
    data: Mapping[str, Any]


@dataclass(eq=False)
class Subscription:
    """One reader's queue; `plugin_id` None: every plugin."""

    plugin_id: str | None
    maxsize: int
    queue: asyncio.Queue[FeedEvent | None] = field(init=False)  # None: the feed closed, stop reading
    dropped: int = 0  # events lost because the queue was full, not yet reported to the reader

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.maxsize + 1)  # room for the closing None

    def take_dropped(self) -> int:
        """Events lost since the last call."""
        n, self.dropped = self.dropped, 0
        return n

    def offer(self, event: FeedEvent) -> None:
        if self.plugin_id is not None and event.plugin_id != self.plugin_id:
            return
        if self.queue.qsize() >= self.maxsize:
            self.dropped += 1
        else:
            self.queue.put_nowait(event)

    def close(self) -> None:
        self.queue.put_nowait(None)


class LiveFeed(HostObserver):
    def __init__(self, queue_max: int) -> None:
        self._queue_max = queue_max
        self._subscribers: set[Subscription] = set()
        self.closed = False

    def subscribe(self, plugin_id: str | None = None) -> Subscription:
        """A new reader; on a closed feed its queue holds only the end."""
        sub = Subscription(plugin_id, self._queue_max)
        if self.closed:
            sub.close()
        else:
            self._subscribers.add(sub)
        return sub

    def close(self) -> None:
        """Tell every reader the stream ends (the server is shutting down: an open stream would
        hold its shutdown until the client left)."""
        self.closed = True
        for sub in self._subscribers:
            sub.close()
        self._subscribers.clear()

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: FeedEvent) -> None:
        for sub in self._subscribers:
            sub.offer(event)

    def log_line(self, plugin_id: str, line: Mapping[str, Any]) -> None:
        """A line the plugin's relay let through (already sanitised)."""
        if self._subscribers:
            self.publish(FeedEvent("log", plugin_id, dict(line)))

    # -- host observer --
    def plugin_failure(self, plugin_id: str, kind: str) -> None:
        if self._subscribers:
            self.publish(FeedEvent("failure", plugin_id, {"class": str(kind)}))
