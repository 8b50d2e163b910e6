"""The message service: every outbound send goes through `message:sending` (which may veto or
rewrite it) and then `message:sent`, or `message:failed` when the engine refuses it; every inbound
message goes through `message:received`.

An inbound message on a chat handed to a human skips the bots' handlers (`plugbox.handover`).

`message:sending` carries OpenWA's `{sessionId, input, type}` (`plugbox.payloads.MessageSending`).
What goes out is the chain's final `input`, chat and text alike: the bus has already checked every
rewrite against the schema and kept the session fixed, and the engine checks the chat belongs to
that session. When the chain vetoes, or a plugin allowed to rewrite returned data of the wrong
shape, nothing is sent (fail closed) and the caller gets `SendVetoed` saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

from plugbox.engines.base import Engine
from plugbox.errors import EngineError, SendVetoed
from plugbox.hooks import HookBus, HookOutcome
from plugbox.payloads import MessageSending

__all__ = ["MessageService"]


# (session, inbound message) -> the plugins it must not reach; the host wires the handover gate.
Gate = Callable[[str, Mapping[str, Any]], Collection[str]]


class MessageService:
    def __init__(self, engine: Engine, bus: HookBus, gate: Gate | None = None) -> None:
        self.engine = engine
        self.bus = bus
        self.gate = gate

    async def send_text(
        self, session_id: str, chat_id: str, text: str, *, quoted_id: str | None = None, caller: str | None = None
    ) -> dict[str, Any]:
        """Send through the hooks and the engine. `caller`: the plugin sending (the events' source,
        and their cause: its sends have only a share of other plugins' observer slots); None: the host."""
        source = caller or "host"
        request: dict[str, Any] = {"chatId": chat_id, "text": text}
        if quoted_id is not None:
            request["quotedMessageId"] = quoted_id
        pending = {"sessionId": session_id, "input": request, "type": "text" if quoted_id is None else "reply"}
        outcome = await self.bus.execute("message:sending", pending, session_id, source=source, cause=caller)
        send = self._approved(outcome, session_id, chat_id)
        chat, body = send.input.chat_id, send.input.text
        try:
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
