"""The message service: every outbound send goes through `message:sending` (which may veto or
rewrite it) and then `message:sent`, or `message:failed` when the engine refuses it; every inbound
message goes through `message:received`.

An inbound message on a chat handed to a human skips the bots' handlers (`plugbox.handover`).

`message:sending` carries OpenWA's `{sessionId, input, type}` (`plugbox.payloads.MessageSending`).
What goes out is the chain's final `input`, chat and text alike: the bus has already checked every
rewrite against the schema and kept the session fixed, and the engine checks the chat belongs to
that session. When the chain vetoes, or a plugin allowed to rewrite returned data of the wrong
shape, nothing is sent (fail closed) and the caller gets `SendVetoed` saying why.

A plugin's sends are bounded twice (`SendLimits`; the host's own, `caller` None, never are):
- a rate, `messages_sends_per_s_per_plugin` (a token bucket with a burst), checked first, before the
  hook chain runs: a flood costs its neighbours' `message:sending` handlers nothing past it. A send
  over the rate waits for the bucket up to `messages_send_wait_max_ms`, else is refused naming the
  setting: on the Cloud API every plugin on a session spends one rate limit Meta keeps per number;
- a slot of `FairSlots` (`plugbox.totals.slots`) around the engine call only (not the hooks):
  `engine_calls_in_flight_per_plugin` per plugin, past which a plugin waits behind its own sends, and
  `engine_calls_in_flight` host-wide, past which only plugins holding their fair share wait (at most
  twice it in all). The Cloud API engine sends every plugin's calls through one pool of connections,
  each held up to `cloudapi_timeout_ms`: without slots four plugins with slow sends filled it and a
  neighbour's send failed waiting for a connection. Waiting, not refusal, past a plugin's own bound:
  its waiting sends are already bounded by `max_calls_in_flight` and queue behind its own slots only,
  and a bot answering a burst gets its replies out late rather than lost. Engine reads take no slot:
  both engines answer them from memory (the Cloud API has no endpoint for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec

from plugbox._ratelimit import TokenBucket
from plugbox.engines.base import Engine
from plugbox.errors import CapabilityError, EngineError, SendVetoed
from plugbox.hooks import HookBus, HookOutcome
from plugbox.payloads import MessageSending
from plugbox.settings import Settings
from plugbox.totals.slots import FairSlots

__all__ = ["MessageService", "SendLimits"]


# (session, inbound message) -> the plugins it must not reach; the host wires the handover gate.
Gate = Callable[[str, Mapping[str, Any]], Collection[str]]


class SendLimits:
    """A plugin's send rate and its share of the engine's calls in flight (see the module docstring)."""

    def __init__(self, per_s: float, burst: float, max_wait_s: float, slots: FairSlots,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self.burst = burst
        self.max_wait_s = max_wait_s
        self.slots = slots
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self.rate_refused: Counter[str] = Counter()  # plugin -> sends refused for its rate
        self.rate_waited: Counter[str] = Counter()  # plugin -> sends that waited for its rate

    @classmethod
    def from_settings(cls, settings: Settings, clock: Callable[[], float] = time.monotonic) -> SendLimits:
        total = settings.engine_calls_in_flight
        slots = FairSlots(total, settings.engine_calls_in_flight_per_plugin, ceiling=2 * total)
        return cls(settings.messages_sends_per_s_per_plugin, settings.messages_sends_burst_per_plugin,
                   settings.messages_send_wait_max_ms / 1000, slots, clock)

    async def pace(self, plugin_id: str, where: str) -> None:
        """Spend one of the plugin's sends: at once, after a wait, or CapabilityError naming the rate."""
        bucket = self._buckets.get(plugin_id)
        if bucket is None:
            bucket = self._buckets[plugin_id] = TokenBucket(self.per_s, self.burst, self._clock)
        wait = bucket.reserve(1, self.max_wait_s)
        if wait is None:
            self.rate_refused[plugin_id] += 1
            raise CapabilityError(
                f"{where} refused: plugin {plugin_id!r} is sending faster than messages_sends_per_s_per_plugin "
                f"({self.per_s:g}/s, burst {self.burst:g}) and would wait more than {self.max_wait_s:g} s")
        if wait > 0:
            self.rate_waited[plugin_id] += 1
            await asyncio.sleep(wait)


class MessageService:
    def __init__(self, engine: Engine, bus: HookBus, gate: Gate | None = None, *,
                 limits: SendLimits | None = None) -> None:
        self.engine = engine
        self.bus = bus
        self.gate = gate
        self.limits = limits  # None: plugins' sends are not bounded here (tests, tools)

    async def send_text(
        self, session_id: str, chat_id: str, text: str, *, quoted_id: str | None = None, caller: str | None = None
    ) -> dict[str, Any]:
        """Send through the hooks and the engine. `caller`: the plugin sending (the events' source,
        and their cause: its sends have only a share of other plugins' observer slots); None: the host."""
        source = caller or "host"
        slot: AbstractAsyncContextManager[None] = contextlib.nullcontext()
        if caller is not None and self.limits is not None:
            await self.limits.pace(caller, f"send to chat {chat_id!r} on session {session_id!r}")
            slot = self.limits.slots.hold(caller)  # entered around the engine call only
        request: dict[str, Any] = {"chatId": chat_id, "text": text}
        if quoted_id is not None:
            request["quotedMessageId"] = quoted_id
        pending = {"sessionId": session_id, "input": request, "type": "text" if quoted_id is None else "reply"}
        outcome = await self.bus.execute("message:sending", pending, session_id, source=source, cause=caller)
        send = self._approved(outcome, session_id, chat_id)
        chat, body = send.input.chat_id, send.input.text
        try:
            async with slot:
                if send.input.quoted_message_id is None:
                    message = await self.engine.send_text(session_id, chat, body)
                else:
                    message = await self.engine.reply(session_id, chat, send.input.quoted_message_id, body)
        except EngineError as exc:
            failed = {"sessionId": session_id, "error": str(exc), "input": outcome.data["input"], "type": send.type}
            await self.bus.execute("message:failed", failed, session_id, source=source, cause=caller)
            raise
        await self.bus.execute("message:sent", message, session_id, source=source, cause=caller)
        return message

    @staticmethod
    def _approved(outcome: HookOutcome, session_id: str, chat_id: str) -> MessageSending:
        """The send the chain settled on, or SendVetoed naming who refused it and why."""
        where = f"send to chat {chat_id!r} on session {session_id!r}"
        if outcome.malformed is not None:
            raise SendVetoed(f"{where} refused: plugin {outcome.stopped_by!r} returned malformed "
                             f"message:sending data ({outcome.malformed})")
        if outcome.vetoed:
            raise SendVetoed(f"{where} vetoed by plugin {outcome.stopped_by!r}")
        try:
            return msgspec.convert(outcome.data, MessageSending)
        except msgspec.ValidationError as exc:  # the caller's own arguments: nothing was rewritten
            raise SendVetoed(f"{where} refused: {exc}") from None

    async def receive(self, session_id: str, message: dict[str, Any]) -> HookOutcome:
        skip = self.gate(session_id, message) if self.gate is not None else ()
        return await self.bus.execute("message:received", message, session_id, source="engine", skip=skip)
