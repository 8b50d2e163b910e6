"""The loopback engine's data model (see `plugbox.engines.loopback`): chat and contact ids (the one
canonical form every id is stored in, `canonical_id`) and the per-session state (`_Session`: its own
number, status, contacts, groups and chat histories). Pure data: no events, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from plugbox.engines._memory import ChatLog
from plugbox.errors import EngineError

_CONTACT_SUFFIX = "@c.us"
_GROUP_SUFFIX = "@g.us"
_PHONE_DIGITS = re.compile(r"[0-9]{5,15}")  # E.164 allows at most 15 digits
_GROUP_LOCAL = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,63}")
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A simulator accepts opaque test ids too ("c1", "support-desk"), as long as they cannot be
# mistaken for a phone number or a WhatsApp address.
_OPAQUE = re.compile(r"[A-Za-z][A-Za-z0-9._:-]{0,127}")
_PHONE_PUNCTUATION = str.maketrans("", "", " +-().")
_FIRST_OWN_NUMBER = 15550000000
# WhatsApp's receipt levels for an outbound message (the `ack` of `message:ack`). A send the engine
# accepted is at "sent"; receipts only move forward. The loopback engine has no media, so no "played".
ACK_LEVELS = {"sent": 1, "delivered": 2, "read": 3}

Message = dict[str, Any]


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def canonical_id(value: object, what: str = "chat id") -> str:
    """``<digits>@c.us`` for a phone number in any common notation (``+1 (555) 010-9999``,
    ``15550109999``, ``15550109999@s.whatsapp.net``), a valid ``<id>@g.us`` unchanged, an opaque
    test id (a letter, then letters, digits, ``._:-``) unchanged; else EngineError."""
    if type(value) is not str:
        raise EngineError(f"{what}: must be a str, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(_GROUP_SUFFIX):
        if _GROUP_LOCAL.fullmatch(text[: -len(_GROUP_SUFFIX)]):
            return text
    else:
        local, at, domain = text.partition("@")
        if not at:
            local = local.translate(_PHONE_PUNCTUATION)
        if (not at or domain in ("c.us", "s.whatsapp.net")) and _PHONE_DIGITS.fullmatch(local):
            return local + _CONTACT_SUFFIX
        if not at and _OPAQUE.fullmatch(text):
            return text
    raise EngineError(f"{what} {_show(value)}: not a phone number, <digits>@c.us, <id>@g.us or a test id")


def _number(contact_id: str) -> str:
    return contact_id.partition("@")[0]


def _is_group(chat_id: str) -> bool:
    return chat_id.endswith(_GROUP_SUFFIX)


def _ack_name(level: int) -> str:
    return next(name for name, n in ACK_LEVELS.items() if n == level)


@dataclass
class _Session:
    id: str
    me: str
    status: str = "created"  # created | starting | qr | ready | disconnected | error
    qr: str | None = None  # the last pairing code shown
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    chats: dict[str, ChatLog] = field(default_factory=dict)  # least recently active first

    def chat(self, chat_id: str) -> ChatLog:
        chat = self.chats.get(chat_id)
        if chat is None:
            chat = self.chats[chat_id] = ChatLog(chat_id)
        return chat

    def touch(self, chat: ChatLog) -> None:
        """`chat` is the most recently active now: it goes last in `chats`."""
        if next(reversed(self.chats)) != chat.id:
            del self.chats[chat.id]
            self.chats[chat.id] = chat

    def least_active(self) -> ChatLog | None:
        """The chat that has been quiet longest and that may be forgotten (not a pinned group)."""
        return next((chat for chat in self.chats.values() if not chat.pinned), None)
