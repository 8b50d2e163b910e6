"""What a worker asks of the host: capability calls and registrations, served for one plugin.

`CapabilityServer` sends each call through the router, the same single entry as the built-ins
use: a verb that never waits is answered inline, inside the channel's read batch; any other runs
as a task, whose loop time is charged to the worker's CPU bucket like the read batch that
received it. Every call, inline or not, holds one of `max_calls` slots from the moment it arrives
until its answer has been handed to the transport (an answer held back by the channel's
backpressure keeps its slot); a call past `max_calls` is refused at once. Re-entry is judged from the
host's own books: a call is served in the context the bus gives for the hook events the host has
in flight to this worker, whatever the worker claims. `Registrations` maps the worker's
register_* onto the bus and the plugin's webhook routes and search provider, each checked by the
plugin entry's rules, and stops listening past MAX_REGISTRATIONS.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plugbox.errors import CapabilityError, CapabilityTimeout
from plugbox.protocol import Call, Register, Reply

if TYPE_CHECKING:
    from plugbox.bridge.channel import Channel
    from plugbox.capabilities.router import CapabilityRouter
    from plugbox.hooks import Handler, HookBus
    from plugbox.runtime import PluginHandle

__all__ = ["MAX_REGISTRATIONS", "CapabilityServer", "Registrations"]

log = logging.getLogger("plugbox.bridge")

MAX_REGISTRATIONS = 1024


class CapabilityServer:
    def __init__(self, entry: PluginHandle, router: CapabilityRouter, bus: HookBus, channel: Channel,
                 max_calls: int) -> None:
        self._entry = entry
        self._router = router
        self._bus = bus
        self._channel = channel
        self.max_calls = max_calls
        self._calls: set[asyncio.Future[Any]] = set()
        self._held = 0  # answers the channel holds back (backpressure), not yet handed
        self._refused = 0

    @property
    def in_flight(self) -> int:
        return len(self._calls) + self._held

    @property
    def refused(self) -> int:
        return self._refused

    def serve(self, msg: Call) -> None:
        if len(self._calls) + self._held >= self.max_calls:
            self._refused += 1
            self._channel.answer(Reply(msg.id, False, None,
                                       f"{msg.verb}: too many capability calls in flight (max {self.max_calls})"))
            return
        router = self._router
        if router.is_sync(msg.verb):  # never waits: answered now, in this read batch
            self._held += 1
            self._channel.answer(self._reply(msg.id, router.invoke(self._entry, msg.verb, msg.args)), self._unhold)
            return
        context = self._bus.context_for(self._entry.plugin_id, self._channel.hook_events())
        # its task runs in `context`, and the loop time of its steps is charged to this worker
        fut = context.run(router.invoke, self._entry, msg.verb, msg.args, charge=self._channel.charge)
        self._calls.add(fut)
        fut.add_done_callback(functools.partial(self._done, msg.id))

    def _unhold(self) -> None:
        self._held -= 1

    def _done(self, call_id: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            self._calls.discard(fut)
            return
        # The slot is freed once the answer has been handed to the transport, not before; the
        # future leaves the books now, or its result would outlive an answer the channel refuses
        # to hold (channel.py: the memory of held answers).
        reply = self._reply(call_id, fut)
        self._calls.discard(fut)
        self._held += 1
        self._channel.answer(reply, self._unhold)

    def _reply(self, call_id: int, fut: asyncio.Future[Any]) -> Reply:
        exc = fut.exception()
        if exc is None:
            reply = Reply(call_id, True, fut.result())
        elif isinstance(exc, CapabilityTimeout):
            reply = Reply(call_id, False, None, str(exc), "timeout")
        elif isinstance(exc, CapabilityError):
            reply = Reply(call_id, False, None, str(exc))
        else:  # the router translates every service error; anything else is a host bug
            log.error("plugin %s: capability call failed in the host", self._entry.plugin_id, exc_info=exc)
            reply = Reply(call_id, False, None, f"capability call failed in the host ({type(exc).__name__})")
        return reply

    def cancel_all(self) -> None:
        for fut in list(self._calls):
            fut.cancel()
        self._calls.clear()  # an answer the closed channel still held will never be handed over
        self._held = 0


class Registrations:
    def __init__(self, entry: PluginHandle, bus: HookBus, hook_handler: Callable[[int], Handler]) -> None:
        self._entry = entry
        self._bus = bus
        self._hook_handler = hook_handler
        self._count = 0
        self._webhook_routes: set[str] = set()
        self._has_search = False

    @property
    def has_search(self) -> bool:
        return self._has_search

    def has_webhook(self, route: str) -> bool:
        return route in self._webhook_routes

    def on_register(self, msg: Register) -> None:
        self._count += 1
        if self._count > MAX_REGISTRATIONS:
            if self._count == MAX_REGISTRATIONS + 1:
                log.warning("plugin %s: more than %d registrations; ignoring the rest",
                            self._entry.plugin_id, MAX_REGISTRATIONS)
            return
        try:
            if msg.what == "hook":
                self._bus.register(self._entry.plugin_id, msg.name, self._hook_handler(msg.handler_id), msg.priority)
            elif msg.what == "webhook":
                self._entry.check_webhook_route(msg.name)
                self._webhook_routes.add(msg.name)
            else:
                self._entry.check_search_provider()
                self._has_search = True
        except CapabilityError as exc:
            self._entry.logs.emit("warning", f"registration refused: {exc}")
