"""The engine interface: what the host needs from a messaging engine (SPEC §3 `ctx.engine`, §8).

An engine owns sessions (one connected account each) and answers the engine verbs with plain data
(dicts, lists, str, int, bool), so results can cross to a sandboxed plugin unchanged. It raises
`plugbox.errors.EngineError` naming the session, chat or argument it refuses. Permission and
session-scope checks are not the engine's business: the capability layer runs them first.

Shapes (WhatsApp-style ids: contacts ``<digits>@c.us``, groups ``<id>@g.us``):

- message: ``{"id", "chatId", "from", "to"?, "body", "fromMe", "timestamp" (int epoch seconds),
  "quotedId" (str | None), "hasMedia"}`` (`plugbox.payloads.Message`: the shape hooks check)
- session: ``{"id", "status", "live", "me"}``

The engine reports what happens to it through two callbacks the host wires to hooks, each of which
may be sync or async: `SessionEventCallback`, for every event the engine itself reports (``session:*``,
and what happens to a message after it exists: ``message:ack``, ``message:persisted``,
``message:deleted``), each with its payload as `plugbox.payloads.PAYLOADS` defines it, and
`InboundCallback` (``message:received``). Sends are the message service's: it fires
``message:sending``, ``message:sent`` and ``message:failed`` around the send verbs (an engine that
learns of a failure only later, as a webhook engine does, reports ``message:failed`` itself).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "HISTORY_LIMIT_DEFAULT",
    "HISTORY_LIMIT_MAX",
    "TEXT_MAX_CHARS",
    "Engine",
    "EngineLifecycle",
    "InboundCallback",
    "SessionEventCallback",
    "clamp_history_limit",
]

# Limits of the engine contract (SPEC §3), not operator settings: a plugin written against one host
# must see the same bounds on every host, so they are fixed here, once, for engines and the verbs.
HISTORY_LIMIT_DEFAULT = 50
HISTORY_LIMIT_MAX = 100
TEXT_MAX_CHARS = 65536
"""WhatsApp's own cap on a text message; the send verbs refuse longer text before an engine sees it."""

SessionEventCallback = Callable[[str, str, dict[str, Any]], Awaitable[None] | None]
"""`(event_name, session_id, data)`, e.g. ``("session:ready", "main", {...})`` or
``("message:ack", "main", {"messageId": ..., "status": "read", "ack": 3})``."""

InboundCallback = Callable[[str, dict[str, Any]], Awaitable[None] | None]
"""`(session_id, message)` for every inbound message the engine receives."""


def clamp_history_limit(limit: int) -> int:
    """Clamp a history `limit` to 1..HISTORY_LIMIT_MAX, as every engine and the capability layer must."""
    return max(1, min(HISTORY_LIMIT_MAX, limit))


@runtime_checkable
class Engine(Protocol):
    """The engine verbs. Every verb names its session; an unknown or not-live session is an EngineError.
    The host sets the two callbacks before it starts the engine."""

    on_inbound: InboundCallback | None
    on_session_event: SessionEventCallback | None

    def is_live(self, session_id: str) -> bool:
        """True when the session exists and is connected (verbs can run on it)."""
        ...

    def sessions(self) -> list[dict[str, Any]]:
        """Every session the engine knows, live or not."""
        ...

    async def get_group_info(self, session_id: str, group_id: str) -> dict[str, Any]: ...

    async def get_contacts(self, session_id: str) -> list[dict[str, Any]]: ...

    async def get_contact_by_id(self, session_id: str, contact_id: str) -> dict[str, Any] | None: ...

    async def check_number_exists(self, session_id: str, phone: str) -> bool: ...

    async def get_chats(self, session_id: str) -> list[dict[str, Any]]: ...

    async def get_chat_history(
        self,
        session_id: str,
        chat_id: str,
        limit: int = HISTORY_LIMIT_DEFAULT,
        include_media: bool = False,
    ) -> list[dict[str, Any]]:
        """The last `limit` messages of the chat (`clamp_history_limit`), oldest first."""
        ...

    async def canonical_chat_id(self, session_id: str, chat_id: str) -> str:
        """The engine's canonical id for `chat_id` (e.g. a phone number in any common notation)."""
        ...

    async def send_text(self, session_id: str, chat_id: str, text: str) -> dict[str, Any]:
        """Send `text`; returns the sent message."""
        ...

    async def reply(self, session_id: str, chat_id: str, quoted_id: str, text: str) -> dict[str, Any]:
        """Send `text` quoting message `quoted_id` of the same chat; returns the sent message."""
        ...


@runtime_checkable
class EngineLifecycle(Protocol):
    """An engine with its own start and stop (connections to open, clients to close); the host calls
    `start` after wiring its callbacks and `aclose` when it stops. The loopback engine has neither."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...
