"""The loopback engine: an in-memory WhatsApp-style engine for development, demos and tests (SPEC §8).

It simulates sessions (with their ``session:*`` events), contacts, groups and chats, keeps each chat's
history in both directions, records every outbound message in `LoopbackEngine.sent`, and lets a user
inject inbound messages with `inject_inbound`, which the host turns into ``message:received``.

For tests and demos it also simulates what a real engine reports on its own, so every event a plugin
can register fires on this engine too: a pairing QR code (`start_session(pair=True)`:
``session:qr``), an engine failure (`fail_session`: ``session:error``), delivery receipts (`ack`:
``message:ack``, an outbound message going sent → delivered → read), storage (every stored message:
``message:persisted``) and deletion (`delete_message`: ``message:deleted``). A send the engine
refuses is an EngineError, which the message service turns into ``message:failed``.

Nothing here touches the network or the disk, and nothing is random: message ids come from a counter
and timestamps from the injectable `clock`, so tests are deterministic. Memory is bounded (plugins
choose what is sent and to which chat): chat histories per chat and in total (`_memory`), the
number of chats per session (the least recently active one is forgotten first, so listing them
costs a bounded time), and `sent` by count and bytes, the oldest dropped first; the bounds are
settings (`loopback_*`).
Ids and the per-session state live in `_loopback_model`; this module owns the behaviour and events.
It is over the usual size because it is one simulator: every verb shares its sessions, chats and
receipts, and splitting the class would only scatter that state.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable
from typing import Any

from plugbox.engines._loopback_model import (
    _CONTACT_SUFFIX,
    _FIRST_OWN_NUMBER,
    _GROUP_SUFFIX,
    _SESSION_ID,
    ACK_LEVELS,
    Message,
    _ack_name,
    _is_group,
    _number,
    _Session,
    _show,
    canonical_id,
)
from plugbox.engines._memory import ChatLog, MessageMemory, message_cost
from plugbox.engines.base import (
    HISTORY_LIMIT_DEFAULT,
    TEXT_MAX_CHARS,
    InboundCallback,
    SessionEventCallback,
    clamp_history_limit,
)
from plugbox.errors import EngineError
from plugbox.settings import DEFAULTS, Settings

__all__ = ["ACK_LEVELS", "LoopbackEngine", "canonical_id"]


class LoopbackEngine:
    """An in-memory engine implementing `plugbox.engines.base.Engine`."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        on_session_event: SessionEventCallback | None = None,
        on_inbound: InboundCallback | None = None,
        history_limit: int = DEFAULTS.loopback_history_per_chat,
        chat_bytes: int = DEFAULTS.loopback_chat_bytes,
        history_bytes: int = DEFAULTS.loopback_history_bytes,
        max_sent: int = DEFAULTS.loopback_sent_max,
        sent_bytes: int = DEFAULTS.loopback_sent_bytes,
        max_chats: int = DEFAULTS.loopback_chats_per_session,
    ) -> None:
        self.clock = clock
        self.on_session_event = on_session_event
        self.on_inbound = on_inbound
        self.memory = MessageMemory(
            per_chat_messages=history_limit, per_chat_bytes=chat_bytes, total_bytes=history_bytes
        )
        self.max_sent = max_sent
        self.max_sent_bytes = sent_bytes
        self.max_chats = max_chats
        self.sent: list[Message] = []  # the latest outbound messages, each with its "session_id"
        self._sent_bytes = 0
        self._sessions: dict[str, _Session] = {}
        self._message_counter = 0
        self._session_counter = 0

    # -- sessions ------------------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> LoopbackEngine:
        """An engine with the memory bounds the operator set."""
        return cls(
            history_limit=settings.loopback_history_per_chat,
            chat_bytes=settings.loopback_chat_bytes,
            history_bytes=settings.loopback_history_bytes,
            max_sent=settings.loopback_sent_max,
            sent_bytes=settings.loopback_sent_bytes,
            max_chats=settings.loopback_chats_per_session,
            **kwargs,
        )

    def is_live(self, session_id: str) -> bool:
        session = self._sessions.get(session_id)
        return session is not None and session.status == "ready"

    def sessions(self) -> list[dict[str, Any]]:
        return [
            {"id": s.id, "status": s.status, "live": s.status == "ready", "me": s.me}
            for s in sorted(self._sessions.values(), key=lambda s: s.id)
        ]

    async def create_session(self, session_id: str, start: bool = True, me: str | None = None) -> None:
        """Create a session (``session:created``) and, with `start`, connect it. `me` is its own number."""
        if type(session_id) is not str or not _SESSION_ID.fullmatch(session_id):
            raise EngineError(f"session id {_show(session_id)}: 1-64 of A-Z a-z 0-9 . _ - required")
        if session_id in self._sessions:
            raise EngineError(f"session {session_id!r} already exists")
        self._session_counter += 1
        own = canonical_id(me, "own number") if me is not None else self._default_me()
        if _is_group(own):
            raise EngineError(f"own number {me!r}: a group id cannot own a session")
        self._sessions[session_id] = _Session(session_id, own)
        await self._emit("session:created", session_id, self._record(self._sessions[session_id]))
        if start:
            await self.start_session(session_id)

    def _default_me(self) -> str:
        return f"{_FIRST_OWN_NUMBER + self._session_counter}{_CONTACT_SUFFIX}"

    async def start_session(self, session_id: str, pair: bool = False) -> None:
        """Connect: ``session:starting`` then ``session:ready``. With `pair`, the session first shows
        a pairing QR code (``session:qr``; the code itself is `qr_code`) that is scanned at once.
        A no-op on a live session."""
        session = self._session(session_id)
        if session.status == "ready":
            return
        session.status = "starting"
        await self._emit("session:starting", session_id, {"sessionId": session_id})
        if pair:
            session.status = "qr"
            session.qr = f"loopback-qr:{session_id}:{self._next_id()}"
            await self._emit("session:qr", session_id, {"sessionId": session_id})
        session.status = "ready"
        await self._emit("session:ready", session_id, {"phone": _number(session.me), "pushName": None})

    async def stop_session(self, session_id: str, reason: str = "stopped") -> None:
        """Disconnect (``session:disconnected`` with `reason`); data is kept. A no-op when not live."""
        session = self._session(session_id)
        if session.status != "ready":
            return
        session.status = "disconnected"
        await self._emit("session:disconnected", session_id, {"reason": reason})

    def qr_code(self, session_id: str) -> str | None:
        """The last pairing QR code the session showed (a fake string), or None."""
        return self._session(session_id).qr

    async def fail_session(self, session_id: str, reason: str = "engine failure") -> None:
        """Put the session in error, as an engine does when it crashes or needs the operator:
        ``session:error`` with `reason`; the session is not live until started again."""
        session = self._session(session_id)
        if type(reason) is not str or not reason or len(reason) > 1024:
            raise EngineError("reason: must be a str of 1-1024 characters")
        session.status = "error"
        await self._emit("session:error", session_id, {"reason": reason})

    async def delete_session(self, session_id: str) -> None:
        """Disconnect if live, forget the session and its data, then ``session:deleted``."""
        await self.stop_session(session_id, reason="deleted")
        session = self._sessions.pop(session_id)
        self.memory.forget(session.chats)
        session.status = "deleted"
        await self._emit("session:deleted", session_id, self._record(session))

    @staticmethod
    def _record(session: _Session) -> dict[str, Any]:
        return {"id": session.id, "name": session.id, "status": session.status, "phone": _number(session.me)}

    async def _emit(self, event: str, session_id: str, data: dict[str, Any]) -> None:
        """Report an event of a session or of one of its messages, with its payload
        (`plugbox.payloads`: OpenWA's shapes)."""
        if self.on_session_event is not None:
            result = self.on_session_event(event, session_id, data)
            if inspect.isawaitable(result):
                await result

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id) if type(session_id) is str else None
        if session is None:
            raise EngineError(f"unknown session {_show(session_id)}")
        return session

    def _live(self, session_id: str) -> _Session:
        session = self._session(session_id)
        if session.status != "ready":
            raise EngineError(f"session {session_id!r} is not live (status {session.status!r})")
        return session

    # -- fixtures: contacts and groups (need a known session, live or not) ---------------------------

    def add_contact(
        self, session_id: str, contact_id: str, name: str, phone: str | None = None
    ) -> dict[str, Any]:
        session = self._session(session_id)
        cid = canonical_id(contact_id, "contact id")
        if _is_group(cid):
            raise EngineError(f"contact id {contact_id!r}: a group id, use add_group")
        number = canonical_id(phone, "phone") if phone is not None else cid
        contact = {"id": cid, "name": str(name), "number": number.partition("@")[0], "isGroup": False}
        session.contacts[cid] = contact
        return dict(contact)

    def add_group(
        self,
        session_id: str,
        group_id: str,
        name: str,
        participants: Iterable[str],
        admins: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Add a group (a bare id gets ``@g.us``); its chat exists from now on."""
        session = self._session(session_id)
        if type(group_id) is str and "@" not in group_id:
            group_id += _GROUP_SUFFIX
        gid = canonical_id(group_id, "group id")
        if not _is_group(gid):
            raise EngineError(f"group id {group_id!r}: not a <id>@g.us id")
        members = [canonical_id(p, "participant") for p in participants]
        admin_ids = {canonical_id(a, "admin") for a in admins}
        session.groups[gid] = {"id": gid, "name": str(name), "participants": members, "admins": admin_ids}
        session.chat(gid).pinned = True
        return self._group_view(session.groups[gid])

    @staticmethod
    def _group_view(group: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": group["id"],
            "name": group["name"],
            "participants": [{"id": p, "isAdmin": p in group["admins"]} for p in group["participants"]],
        }

    # -- engine verbs --------------------------------------------------------------------------------

    async def get_group_info(self, session_id: str, group_id: str) -> dict[str, Any]:
        session = self._live(session_id)
        gid = canonical_id(group_id, "group id")
        group = session.groups.get(gid)
        if group is None:
            raise EngineError(f"session {session_id!r} has no group {gid!r}")
        return self._group_view(group)

    async def get_contacts(self, session_id: str) -> list[dict[str, Any]]:
        session = self._live(session_id)
        return [dict(session.contacts[cid]) for cid in sorted(session.contacts)]

    async def get_contact_by_id(self, session_id: str, contact_id: str) -> dict[str, Any] | None:
        session = self._live(session_id)
        contact = session.contacts.get(canonical_id(contact_id, "contact id"))
        return None if contact is None else dict(contact)

    async def check_number_exists(self, session_id: str, phone: str) -> bool:
        """True for the session's own number, its contacts and anyone it has chatted with."""
        session = self._live(session_id)
        cid = canonical_id(phone, "phone")
        return not _is_group(cid) and (cid == session.me or cid in session.contacts or cid in session.chats)

    async def get_chats(self, session_id: str) -> list[dict[str, Any]]:
        """Chats, most recent activity first."""
        session = self._live(session_id)
        chats = sorted(session.chats.values(), key=lambda c: (-c.timestamp, c.id))
        return [
            {
                "id": c.id,
                "name": self._chat_name(session, c.id),
                "isGroup": _is_group(c.id),
                "timestamp": c.timestamp,
            }
            for c in chats
        ]

    @staticmethod
    def _chat_name(session: _Session, chat_id: str) -> str:
        entry = session.groups.get(chat_id) or session.contacts.get(chat_id)
        return str(entry["name"]) if entry else chat_id.partition("@")[0]

    async def get_chat_history(
        self,
        session_id: str,
        chat_id: str,
        limit: int = HISTORY_LIMIT_DEFAULT,
        include_media: bool = False,
    ) -> list[dict[str, Any]]:
        """The last `limit` (`clamp_history_limit`) messages, oldest first. The loopback engine has no
        media; `include_media` is accepted for parity with real engines."""
        session = self._live(session_id)
        if type(limit) is not int:
            raise EngineError(f"limit: must be an int, got {type(limit).__name__}")
        chat = session.chats.get(canonical_id(chat_id))
        if chat is None:
            return []
        messages = list(chat.messages.values())[-clamp_history_limit(limit) :]
        return [dict(m) for m in messages]

    async def canonical_chat_id(self, session_id: str, chat_id: str) -> str:
        self._live(session_id)
        return canonical_id(chat_id)

    async def send_text(self, session_id: str, chat_id: str, text: str) -> dict[str, Any]:
        session = self._live(session_id)
        message = self._send(session, canonical_id(chat_id), text, quoted_id=None)
        await self._persisted(session_id, message)
        return dict(message)

    async def reply(self, session_id: str, chat_id: str, quoted_id: str, text: str) -> dict[str, Any]:
        session = self._live(session_id)
        cid = canonical_id(chat_id)
        self._check_quoted(session, cid, quoted_id)
        message = self._send(session, cid, text, quoted_id=quoted_id)
        await self._persisted(session_id, message)
        return dict(message)

    # -- what happens to a message afterwards ----------------------------------------------------------

    async def ack(self, session_id: str, message_id: str, status: str | None = None) -> dict[str, Any]:
        """A delivery receipt for an outbound message: it moves to `status` ("delivered" or "read";
        by default the next level) and ``message:ack`` fires. Receipts only move forward, and only
        messages this session sent get them. Returns the event's payload."""
        session = self._session(session_id)
        chat = self._chat_of(session, message_id)
        if not chat.messages[message_id]["fromMe"]:
            raise EngineError(f"message {message_id!r}: an inbound message gets no delivery receipt")
        current = chat.acks.get(message_id, ACK_LEVELS["sent"])
        if status is None:
            level = min(current + 1, max(ACK_LEVELS.values()))
        elif type(status) is str and status in ACK_LEVELS:
            level = ACK_LEVELS[status]
        else:
            raise EngineError(f"status {_show(status)}: must be one of {', '.join(ACK_LEVELS)}")
        if level <= current:
            raise EngineError(f"message {message_id!r} is already {_ack_name(current)!r}; receipts only move forward")
        chat.acks[message_id] = level
        data = {"messageId": message_id, "status": _ack_name(level), "ack": level}
        await self._emit("message:ack", session_id, data)
        return data

    def ack_status(self, session_id: str, message_id: str) -> str:
        """The receipt level an outbound message has reached ("sent", "delivered", "read")."""
        chat = self._chat_of(self._session(session_id), message_id)
        return _ack_name(chat.acks.get(message_id, ACK_LEVELS["sent"]))

    async def delete_message(self, session_id: str, message_id: str) -> dict[str, Any]:
        """Delete a message (either direction) from its chat's history: ``message:deleted``.
        Returns the event's payload."""
        session = self._session(session_id)
        chat = self._chat_of(session, message_id)
        self.memory.remove(chat, message_id)
        data = {"sessionId": session_id, "message": {"id": message_id, "chatId": chat.id}}
        await self._emit("message:deleted", session_id, data)
        return data

    @staticmethod
    def _chat_of(session: _Session, message_id: object) -> ChatLog:
        # A scan over the session's chats: their number is bounded by the memory budget, and this
        # is the operator's simulation path, not a plugin's verb.
        if type(message_id) is str:
            for chat in session.chats.values():
                if message_id in chat.messages:
                    return chat
        raise EngineError(f"message {_show(message_id)}: not found in session {session.id!r}")

    async def _persisted(self, session_id: str, message: Message) -> None:
        await self._emit("message:persisted", session_id, {"sessionId": session_id, "message": dict(message)})

    # -- inbound -------------------------------------------------------------------------------------

    async def inject_inbound(
        self,
        session_id: str,
        chat_id: str,
        body: str,
        sender: str | None = None,
        quoted_id: str | None = None,
    ) -> dict[str, Any]:
        """Receive `body` in `chat_id` as if sent by `sender` (required in a group, the peer otherwise),
        store it, and await `on_inbound(session_id, message)`. Returns the message."""
        session = self._live(session_id)
        cid = canonical_id(chat_id)
        self._check_text(body, "body")
        if _is_group(cid):
            if cid not in session.groups:
                raise EngineError(f"session {session_id!r} has no group {cid!r}")
            if sender is None:
                raise EngineError(f"sender: required for a message in group {cid!r}")
            author = canonical_id(sender, "sender")
            if _is_group(author):
                raise EngineError(f"sender {sender!r}: a group cannot send messages")
        else:
            author = cid if sender is None else canonical_id(sender, "sender")
            if author != cid:
                raise EngineError(f"sender {sender!r}: in a direct chat the sender is the chat {cid!r}")
        if quoted_id is not None:
            self._check_quoted(session, cid, quoted_id)
        message = self._store(session, cid, author, session.me, body, False, quoted_id)
        await self._persisted(session_id, message)
        if self.on_inbound is not None:
            result = self.on_inbound(session_id, dict(message))
            if inspect.isawaitable(result):
                await result
        return dict(message)

    # -- internals -----------------------------------------------------------------------------------

    def _next_id(self) -> int:
        self._message_counter += 1
        return self._message_counter

    @staticmethod
    def _check_text(text: object, what: str) -> None:
        if type(text) is not str:
            raise EngineError(f"{what}: must be a str, got {type(text).__name__}")
        if len(text) > TEXT_MAX_CHARS:
            raise EngineError(f"{what}: {len(text)} characters, at most {TEXT_MAX_CHARS} allowed")

    @staticmethod
    def _check_quoted(session: _Session, chat_id: str, quoted_id: object) -> None:
        chat = session.chats.get(chat_id)
        if type(quoted_id) is not str or chat is None or quoted_id not in chat.messages:
            raise EngineError(
                f"quoted message {_show(quoted_id)}: not found in chat {chat_id!r} of session {session.id!r}"
            )

    def _send(self, session: _Session, chat_id: str, text: str, quoted_id: str | None) -> dict[str, Any]:
        self._check_text(text, "text")
        if not text:
            raise EngineError("text: must not be empty")
        if _is_group(chat_id) and chat_id not in session.groups:
            raise EngineError(f"session {session.id!r} has no group {chat_id!r}")
        message = self._store(session, chat_id, session.me, chat_id, text, True, quoted_id)
        self._record_sent({**message, "session_id": session.id})
        return message

    def _record_sent(self, entry: Message) -> None:
        sent = self.sent
        if not sent:  # a test or tool may clear the record
            self._sent_bytes = 0
        sent.append(entry)
        self._sent_bytes += message_cost(entry)
        drop = 0
        while len(sent) - drop > 1 and (
            len(sent) - drop > self.max_sent or self._sent_bytes > self.max_sent_bytes
        ):
            self._sent_bytes -= message_cost(sent[drop])
            drop += 1
        if drop:
            del sent[:drop]

    def _store(
        self,
        session: _Session,
        chat_id: str,
        sender: str,
        to: str,
        body: str,
        from_me: bool,
        quoted_id: str | None,
    ) -> Message:
        timestamp = int(self.clock())
        message: Message = {
            "id": f"lb-{session.id}-{self._next_id()}",
            "chatId": chat_id,
            "from": sender,
            "to": to,
            "body": body,
            "fromMe": from_me,
            "timestamp": timestamp,
            "quotedId": quoted_id,
            "hasMedia": False,
        }
        if chat_id not in session.chats:
            self._make_room(session)
        chat = session.chat(chat_id)
        chat.timestamp = timestamp
        session.touch(chat)
        self.memory.add(session.chats, chat, message)
        return message

    def _make_room(self, session: _Session) -> None:
        """A new chat is about to start: past `max_chats`, the least recently active ones are
        forgotten with their messages."""
        while len(session.chats) >= self.max_chats:
            quiet = session.least_active()
            if quiet is None:
                return  # only pinned groups: the operator's own, and bounded by them
            self.memory.release(quiet)
            del session.chats[quiet.id]
