"""The message service: every outbound send goes through `message:sending` (which may veto) and
`message:sent`; every inbound message goes through `message:received`."""

from __future__ import annotations

from typing import Any

from plugbox.engines.base import Engine
from plugbox.errors import SendVetoed
from plugbox.hooks import HookBus, HookOutcome

__all__ = ["MessageService"]


class MessageService:
    def __init__(self, engine: Engine, bus: HookBus) -> None:
        self.engine = engine
        self.bus = bus

    async def send_text(
        self, session_id: str, chat_id: str, text: str, *, quoted_id: str | None = None, source: str = "host"
    ) -> dict[str, Any]:
        pending = {"sessionId": session_id, "chatId": chat_id, "body": text, "quotedId": quoted_id}
        outcome = await self.bus.execute("message:sending", pending, session_id, source=source)
        if outcome.vetoed:
            raise SendVetoed(
                f"send to chat {chat_id!r} on session {session_id!r} vetoed by plugin {outcome.stopped_by!r}"
            )
        body = outcome.data.get("body") if isinstance(outcome.data, dict) else None
        if not isinstance(body, str):
            body = text
        if quoted_id is None:
            message = await self.engine.send_text(session_id, chat_id, body)
        else:
            message = await self.engine.reply(session_id, chat_id, quoted_id, body)
        await self.bus.execute("message:sent", message, session_id, source=source)
        return message

    async def receive(self, session_id: str, message: dict[str, Any]) -> HookOutcome:
        return await self.bus.execute("message:received", message, session_id, source="engine")
