"""`/api/events`: the host's live feed (`plugbox.feed`) as a server-sent event stream — every
plugin's log lines (`event: log`) and failures (`event: failure`) as they happen, `?plugin=ID` for
one plugin (then its recent lines come first). Any API key reads it. Clients that cannot set a
header on an `EventSource` read it with `fetch` and the key header (the dashboard does): a key in
the URL would end up in access logs.

Readers are capped (`live_feed_max_readers`); a reader that falls behind loses the newest events and
gets `event: dropped` with the count. The stream ends when the client leaves or the feed closes
(server shutdown), and sends a comment every `live_feed_keepalive_ms` so a dead peer is noticed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from plugbox.api._errors import ApiError
from plugbox.api.auth import READ, require
from plugbox.feed import Subscription
from plugbox.host import Host

__all__ = ["routes", "sse"]


def sse(event: str, data: Mapping[str, Any]) -> str:
    """One server-sent event; JSON never holds a raw newline, so `data` is one line."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _stream(sub: Subscription, backlog: list[dict[str, Any]], keepalive_s: float,
                  unsubscribe: Callable[[Subscription], None]) -> AsyncIterator[str]:
    try:
        yield "retry: 2000\n\n"
        for line in backlog:
            yield sse("log", line)
        while True:
            try:
                async with asyncio.timeout(keepalive_s):
                    event = await sub.queue.get()
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if event is None:
                return
            lost = sub.take_dropped()
            if lost:
                yield sse("dropped", {"count": lost})
            yield sse(event.kind, {"plugin": event.plugin_id, **event.data})
    finally:
        unsubscribe(sub)


async def events(request: Request) -> StreamingResponse:
    require(request, READ)
    host: Host = request.app.state.host
    plugin_id = request.query_params.get("plugin")
    backlog: list[dict[str, Any]] = []
    if plugin_id is not None:  # an unknown plugin is a 404, not an empty stream
        backlog = [{"plugin": plugin_id, **line} for line in host.plugin(plugin_id).logs]
    if host.feed.subscribers >= host.settings.live_feed_max_readers:
        raise ApiError(503, f"too many event stream readers ({host.settings.live_feed_max_readers}, "
                            "live_feed_max_readers)")
    # Subscribed in the same step as the backlog was read: no line falls between the two.
    sub = host.feed.subscribe(plugin_id)
    return StreamingResponse(
        _stream(sub, backlog, host.settings.live_feed_keepalive_ms / 1000, host.feed.unsubscribe),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Accel-Buffering": "no"},
    )


routes = [Route("/api/events", events, methods=["GET"])]
