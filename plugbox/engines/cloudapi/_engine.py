"""`CloudApiEngine`: plugbox's engine seam over Meta's WhatsApp Cloud API.

Owns: one session per configured phone number id (the session id *is* that id), the outbound Graph
calls (`send_text`, `reply`), the intake of verified webhook notifications (`handle_notification`,
called by `plugbox.api.routes.cloudapi` after the signature check), and a bounded memory of what it
has seen (`_session`), which answers the verbs Meta has no endpoint for.

Must not: check signatures (`_signature`), know HTTP routing, or log a secret. The access token only
ever leaves in the `Authorization` header of a Graph request.

Verbs and where their answers come from:
- `send_text`, `reply`: the Graph API (`POST /{version}/{phone_number_id}/messages`).
- `get_contacts`, `get_contact_by_id`: contacts seen in notifications (`value.contacts[]`; name and
  number, last `cloudapi_seen_per_session` per session).
- `get_chats`, `get_chat_history`: messages seen in either direction since start (last
  `cloudapi_seen_per_session` and `cloudapi_seen_bytes_per_session` per session, oldest dropped).
  The Cloud API keeps no history a business can read.
- `canonical_chat_id`: local (`<digits>@c.us`).
- `check_number_exists`, `get_group_info`: EngineError. The Cloud API has no contact lookup, and
  having seen a number proves nothing about one not seen; groups are out of scope here.

Events, in the shapes of `plugbox.payloads`: ``session:created`` and ``session:ready`` at `start`
(there is no connection to open: a configured number is ready), ``session:disconnected`` at `aclose`;
``message:received`` for each new text message (Meta redelivers until it gets a 200, so ids already
seen are skipped); ``message:ack`` for each status sent/delivered/read/failed (ack 1/2/3/-1), and
``message:failed`` too for a failed status of a send this engine still remembers (its input is
needed). Other message types and statuses are skipped and counted in `skipped`.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from plugbox.engines.base import (
    HISTORY_LIMIT_DEFAULT,
    TEXT_MAX_CHARS,
    InboundCallback,
    SessionEventCallback,
    clamp_history_limit,
)
from plugbox.engines.cloudapi import _payloads as wire
from plugbox.engines.cloudapi._session import Message, Session
from plugbox.engines.loopback import canonical_id
from plugbox.errors import EngineError, IngressRefused
from plugbox.settings import DEFAULTS, Settings

__all__ = ["CloudApiEngine"]

log = logging.getLogger("plugbox.engines.cloudapi")

_CONTACT_SUFFIX = "@c.us"
# Graph answers to a send are a few hundred bytes; the cap only stops a broken proxy from filling memory.
_GRAPH_RESPONSE_MAX_BYTES = 1 << 20
# WhatsApp's ack levels, as OpenWA's message:ack carries them (-1 error, 1 server, 2 device, 3 read).
_ACK_LEVELS = {"failed": -1, "sent": 1, "delivered": 2, "read": 3}


def _phone_chat(value: object, what: str = "chat id") -> str:
    """``<digits>@c.us``: the Cloud API sends to phone numbers only."""
    cid = canonical_id(value, what)
    if not cid.endswith(_CONTACT_SUFFIX):
        raise EngineError(f"{what} {cid!r}: the Cloud API engine sends to phone numbers (<digits>@c.us) only")
    return cid


def _epoch(text: str) -> int:
    return int(text) if text.isdigit() else 0


class CloudApiEngine:
    """An engine implementing `plugbox.engines.base.Engine` over the WhatsApp Cloud API."""

    def __init__(
        self,
        *,
        access_token: str,
        phone_number_ids: tuple[str, ...],
        api_version: str = DEFAULTS.cloudapi_api_version,
        base_url: str = DEFAULTS.cloudapi_base_url,
        timeout_ms: int = DEFAULTS.cloudapi_timeout_ms,
        seen_per_session: int = DEFAULTS.cloudapi_seen_per_session,
        seen_bytes_per_session: int = DEFAULTS.cloudapi_seen_bytes_per_session,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        on_session_event: SessionEventCallback | None = None,
        on_inbound: InboundCallback | None = None,
    ) -> None:
        if not access_token or not phone_number_ids:
            raise EngineError("the Cloud API engine needs an access token and at least one phone number id")
        self.on_session_event = on_session_event
        self.on_inbound = on_inbound
        self.clock = clock
        self.skipped: Counter[str] = Counter()  # notification items not turned into events, by reason
        self._sessions = {pnid: Session(pnid, seen_per_session, seen_bytes_per_session) for pnid in phone_number_ids}
        self._version = api_version.strip("/")
        self._timeout_s = timeout_ms / 1000
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=httpx.Timeout(self._timeout_s),
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> CloudApiEngine:
        return cls(
            access_token=settings.cloudapi_access_token,
            phone_number_ids=settings.cloudapi_phone_number_ids,
            api_version=settings.cloudapi_api_version,
            base_url=settings.cloudapi_base_url,
            timeout_ms=settings.cloudapi_timeout_ms,
            seen_per_session=settings.cloudapi_seen_per_session,
            seen_bytes_per_session=settings.cloudapi_seen_bytes_per_session,
            **kwargs,
        )

    def __repr__(self) -> str:  # never the client, whose headers hold the token
        return f"CloudApiEngine(sessions={sorted(self._sessions)!r})"

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Make every configured session ready (``session:created``, ``session:ready``)."""
        for session in self._sessions.values():
            if session.live:
                continue
            phone = session.me.partition("@")[0] if session.me else None
            await self._emit("session:created", session.id,
                             {"id": session.id, "name": session.id, "status": "created", "phone": phone})
            session.status = "ready"
            await self._emit("session:ready", session.id, {"phone": phone, "pushName": None})

    async def aclose(self) -> None:
        for session in self._sessions.values():
            if session.live:
                session.status = "disconnected"
                await self._emit("session:disconnected", session.id, {"reason": "stopped"})
        await self._client.aclose()

    # -- sessions ------------------------------------------------------------------------------------

    def is_live(self, session_id: str) -> bool:
        session = self._sessions.get(session_id) if type(session_id) is str else None
        return session is not None and session.live

    def sessions(self) -> list[dict[str, Any]]:
        return [{"id": s.id, "status": s.status, "live": s.live, "me": s.me}
                for s in sorted(self._sessions.values(), key=lambda s: s.id)]

    def _live(self, session_id: str) -> Session:
        session = self._sessions.get(session_id) if type(session_id) is str else None
        if session is None:
            raise EngineError(f"unknown session {session_id!r}")
        if not session.live:
            raise EngineError(f"session {session_id!r} is not live (status {session.status!r})")
        return session

    # -- verbs answered from memory ------------------------------------------------------------------

    async def get_group_info(self, session_id: str, group_id: str) -> dict[str, Any]:
        self._live(session_id)
        raise EngineError(f"session {session_id!r}: the Cloud API engine does not provide group info")

    async def get_contacts(self, session_id: str) -> list[dict[str, Any]]:
        session = self._live(session_id)
        return [dict(session.contacts[cid]) for cid in sorted(session.contacts)]

    async def get_contact_by_id(self, session_id: str, contact_id: str) -> dict[str, Any] | None:
        session = self._live(session_id)
        contact = session.contacts.get(_phone_chat(contact_id, "contact id"))
        return None if contact is None else dict(contact)

    async def check_number_exists(self, session_id: str, phone: str) -> bool:
        self._live(session_id)
        raise EngineError(f"session {session_id!r}: the Cloud API does not provide a number lookup")

    async def get_chats(self, session_id: str) -> list[dict[str, Any]]:
        """Chats seen since start, most recent activity first."""
        session = self._live(session_id)
        latest: dict[str, int] = {}
        for message in session.messages.values():
            latest[message["chatId"]] = max(latest.get(message["chatId"], 0), message["timestamp"])
        return [
            {"id": cid, "name": self._name(session, cid), "isGroup": False, "timestamp": ts}
            for cid, ts in sorted(latest.items(), key=lambda item: (-item[1], item[0]))
        ]

    @staticmethod
    def _name(session: Session, chat_id: str) -> str:
        contact = session.contacts.get(chat_id)
        return str(contact["name"]) if contact and contact["name"] else chat_id.partition("@")[0]

    async def get_chat_history(
        self, session_id: str, chat_id: str, limit: int = HISTORY_LIMIT_DEFAULT, include_media: bool = False
    ) -> list[dict[str, Any]]:
        """The last `limit` messages of the chat seen since start, oldest first (no media here)."""
        session = self._live(session_id)
        if type(limit) is not int:
            raise EngineError(f"limit: must be an int, got {type(limit).__name__}")
        cid = _phone_chat(chat_id)
        found = [dict(m) for m in session.messages.values() if m["chatId"] == cid]
        return found[-clamp_history_limit(limit):]

    async def canonical_chat_id(self, session_id: str, chat_id: str) -> str:
        self._live(session_id)
        return _phone_chat(chat_id)

    # -- sending -------------------------------------------------------------------------------------

    async def send_text(self, session_id: str, chat_id: str, text: str) -> dict[str, Any]:
        return await self._send(session_id, chat_id, text, quoted_id=None)

    async def reply(self, session_id: str, chat_id: str, quoted_id: str, text: str) -> dict[str, Any]:
        if type(quoted_id) is not str or not quoted_id:
            raise EngineError(f"quoted message {quoted_id!r}: must be a message id")
        return await self._send(session_id, chat_id, text, quoted_id=quoted_id)

    async def _send(self, session_id: str, chat_id: str, text: str, quoted_id: str | None) -> Message:
        session = self._live(session_id)
        cid = _phone_chat(chat_id)
        if type(text) is not str or not text:
            raise EngineError("text: must be a non-empty str")
        if len(text) > TEXT_MAX_CHARS:
            raise EngineError(f"text: {len(text)} characters, at most {TEXT_MAX_CHARS} allowed")
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": cid.partition("@")[0],
            "type": "text",
            "text": {"preview_url": False, "body": text},
        }
        if quoted_id is not None:
            payload["context"] = {"message_id": quoted_id}
        status, body = await self._post(session_id, f"/{self._version}/{session_id}/messages", payload)
        if not 200 <= status < 300:
            raise self._graph_refused(session_id, cid, status, body)
        try:
            wamid = wire.decode_send_response(body).messages[0].id
        except (msgspec.DecodeError, IndexError):
            raise EngineError(f"session {session_id!r}: the Graph API answered a send to {cid!r} "
                              "without a message id") from None
        message: Message = {
            "id": wamid, "chatId": cid, "from": session.me, "to": cid, "body": text, "fromMe": True,
            "timestamp": int(self.clock()), "quotedId": quoted_id, "hasMedia": False,
        }
        session.remember(message)
        return dict(message)

    async def _post(self, session_id: str, path: str, payload: dict[str, Any]) -> tuple[int, bytes]:
        try:
            async with self._client.stream("POST", path, json=payload) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > _GRAPH_RESPONSE_MAX_BYTES:
                        raise EngineError(f"session {session_id!r}: Graph API answer larger than "
                                          f"{_GRAPH_RESPONSE_MAX_BYTES} bytes")
                    chunks.append(chunk)
                return response.status_code, b"".join(chunks)
        except httpx.TimeoutException:
            raise EngineError(f"session {session_id!r}: the Graph API did not answer within "
                              f"{self._timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise EngineError(f"session {session_id!r}: cannot reach the Graph API "
                              f"({type(exc).__name__})") from None

    @staticmethod
    def _graph_refused(session_id: str, chat_id: str, status: int, body: bytes) -> EngineError:
        error = wire.graph_error(body)
        if error is None:
            return EngineError(f"session {session_id!r}: the Graph API refused the send to {chat_id!r} "
                               f"with HTTP {status}")
        subcode = f"/{error.error_subcode}" if error.error_subcode is not None else ""
        return EngineError(f"session {session_id!r}: the Graph API refused the send to {chat_id!r}: "
                           f"code {error.code}{subcode} ({error.type}): {error.message[:300]}")

    # -- intake --------------------------------------------------------------------------------------

    async def handle_notification(self, raw: bytes) -> None:
        """Turn a verified webhook body into events. IngressRefused(400) when it is not a notification
        at all; anything inside it we cannot use is skipped and counted, never raised."""
        try:
            notification = wire.decode_notification(raw)
        except msgspec.DecodeError as exc:
            raise IngressRefused(400, "bad_payload", f"not a WhatsApp webhook notification: {exc}") from None
        if notification.object != "whatsapp_business_account":
            self.skipped["object"] += 1
            return
        for entry in notification.entry:
            for change in entry.changes:
                if change.field != "messages" or change.value is None:
                    self.skipped["field"] += 1
                    continue
                await self._take(change.value)

    async def _take(self, value: wire.ChangeValue) -> None:
        session = self._sessions.get(value.metadata.phone_number_id)
        if session is None:
            self.skipped["unknown_phone_number_id"] += 1
            return
        if value.metadata.display_phone_number:
            try:
                session.me = _phone_chat(value.metadata.display_phone_number, "display phone number")
            except EngineError:
                self.skipped["display_phone_number"] += 1
        for contact in value.contacts:
            self._remember_contact(session, contact)
        for raw in value.messages:
            await self._take_message(session, raw)
        for raw in value.statuses:
            await self._take_status(session, raw)

    def _remember_contact(self, session: Session, contact: wire.Contact) -> None:
        try:
            cid = _phone_chat(contact.wa_id, "wa_id")
        except EngineError:
            self.skipped["contact"] += 1
            return
        session.remember_contact(cid, contact.profile.name)

    async def _take_message(self, session: Session, raw: msgspec.Raw) -> None:
        try:
            item = wire.decode_message(raw)
            sender = _phone_chat(item.from_, "from")
        except (msgspec.DecodeError, EngineError):
            self.skipped["malformed_message"] += 1
            return
        if item.type != "text" or item.text is None:
            self.skipped[f"type:{item.type[:32]}"] += 1
            return
        if item.id in session.messages:
            self.skipped["duplicate"] += 1
            return
        if len(item.text.body) > TEXT_MAX_CHARS:
            self.skipped["too_long"] += 1
            return
        message: Message = {
            "id": item.id, "chatId": sender, "from": sender, "to": session.me, "body": item.text.body,
            "fromMe": False, "timestamp": _epoch(item.timestamp),
            "quotedId": item.context.id if item.context is not None else None, "hasMedia": False,
        }
        if not session.live:
            self.skipped["session_not_ready"] += 1
            return
        session.remember(message)
        if self.on_inbound is not None:
            await self._call(self.on_inbound, session.id, dict(message))

    async def _take_status(self, session: Session, raw: msgspec.Raw) -> None:
        try:
            item = wire.decode_status(raw)
        except msgspec.DecodeError:
            self.skipped["malformed_status"] += 1
            return
        level = _ACK_LEVELS.get(item.status)
        if level is None:
            self.skipped[f"status:{item.status[:32]}"] += 1
            return
        await self._emit("message:ack", session.id, {"messageId": item.id, "status": item.status, "ack": level})
        sent = session.messages.get(item.id)
        if item.status == "failed" and sent is not None and sent["fromMe"]:
            # A send Meta accepted and later gave up on: OpenWA's message:failed names the send's input.
            error = "; ".join(f"code {e.code}: {e.title or e.message}" for e in item.errors) or "failed"
            data: dict[str, Any] = {"chatId": sent["chatId"], "text": sent["body"]}
            if sent["quotedId"] is not None:
                data["quotedMessageId"] = sent["quotedId"]
            await self._emit("message:failed", session.id, {
                "sessionId": session.id, "error": error[:1000], "input": data,
                "type": "text" if sent["quotedId"] is None else "reply"})

    async def _emit(self, event: str, session_id: str, data: dict[str, Any]) -> None:
        if self.on_session_event is not None:
            await self._call(self.on_session_event, event, session_id, data)

    async def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        # One failing hook chain must not cost Meta's retry of the whole batch: count, log, go on.
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.skipped["callback_error"] += 1
            log.exception("cloudapi: event callback failed")
