"""The capability allowlist: every verb a plugin may call, its permission, its argument schema and
the host service it reaches. Anything not in `VERBS` is an unknown verb.

Argument schemas are msgspec Structs named `<Verb>Args` (not to be confused with the wire's
`Reply` frame): converting a call's args *is* validating them, so a host
service only ever sees well-typed, length-capped strings.

A value the host only stores and hands back (`storage.set`'s value, `storage.get`'s answer)
is a `msgspec.Raw`: the host keeps it encoded end to end (kv.py checks it); a verb whose answer
holds one says so (`Verb.encoded`), and the router decodes it for a built-in caller.

Verbs whose arguments carry a session inside a record (`conversations.send`, `mappings.upsert`)
expose it as a `session_id` property, so the router checks the session scope of those too before
any service is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from plugbox.capabilities.services import Caller, Services
from plugbox.engines.base import HISTORY_LIMIT_DEFAULT, TEXT_MAX_CHARS, clamp_history_limit
from plugbox.errors import CapabilityError, EngineError
from plugbox.protocol import NIL, value_decoder

if TYPE_CHECKING:
    from plugbox.storage.conversations import ConversationStore

__all__ = ["VERBS", "Verb"]

# Identifiers (sessions, chats, contacts, message ids): non-empty, bounded, no control characters.
Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
Text = Annotated[str, msgspec.Meta(max_length=TEXT_MAX_CHARS)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]

CONVERSATION_MESSAGES_MAX = 100  # records one `conversations.messages` call returns at most
FETCH_URL_MAX_CHARS = 8192
FETCH_BODY_MAX_BYTES = 10 << 20
FETCH_HEADERS_MAX = 64
FETCH_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# RFC 9110 token; values: visible characters, space and tab (no CR, LF, NUL or other controls).
HeaderName = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
HeaderValue = Annotated[str, msgspec.Meta(max_length=8192, pattern=r"^[^\x00-\x08\x0a-\x1f\x7f]*$")]


class _Args(msgspec.Struct, forbid_unknown_fields=True):
    pass


class SendTextArgs(_Args):
    session_id: Ident
    chat_id: Ident
    text: Text


class ReplyArgs(_Args):
    session_id: Ident
    chat_id: Ident
    quoted_id: Ident
    text: Text


class SessionOnlyArgs(_Args):
    session_id: Ident


class GroupInfoArgs(_Args):
    session_id: Ident
    group_id: Ident


class ContactByIdArgs(_Args):
    session_id: Ident
    contact_id: Ident


class CheckNumberArgs(_Args):
    session_id: Ident
    phone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ChatOnlyArgs(_Args):
    session_id: Ident
    chat_id: Ident


class ChatHistoryArgs(_Args):
    session_id: Ident
    chat_id: Ident
    limit: int = HISTORY_LIMIT_DEFAULT
    include_media: bool = False


class StorageKeyArgs(_Args):
    key: Key


class StorageSetArgs(_Args):
    key: Key
    value: msgspec.Raw  # stored as encoded; never decoded here


class StoragePrefixArgs(_Args):
    prefix: Annotated[str, msgspec.Meta(max_length=512)] = ""
    after: Annotated[str, msgspec.Meta(max_length=512)] = ""  # page: keys sorting after this one
    limit: Annotated[int, msgspec.Meta(ge=1)] | None = None  # page size; None: all keys, up to the cap


class NetFetchArgs(_Args):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=FETCH_URL_MAX_CHARS)]
    method: Annotated[str, msgspec.Meta(min_length=1, max_length=16)] = "GET"
    headers: Annotated[dict[HeaderName, HeaderValue], msgspec.Meta(max_length=FETCH_HEADERS_MAX)] = {}
    # str | bytes | None, kept encoded: msgspec allows one str-like type per union, and decoding
    # it as Any would build whatever containers a worker sent. `content()` decodes it.
    body: msgspec.Raw = NIL
    timeout_ms: int | None = None  # None: settings.fetch_timeout_ms; always clamped to 1..fetch_timeout_max_ms

    def __post_init__(self) -> None:
        if self.method.upper() not in FETCH_METHODS:
            raise ValueError(f"'method': {self.method[:16]!r} is not one of {', '.join(FETCH_METHODS)}")
        body = self.content()
        size = len(body.encode()) if isinstance(body, str) else len(body or b"")
        if size > FETCH_BODY_MAX_BYTES:
            raise ValueError(f"'body': {size} bytes, at most {FETCH_BODY_MAX_BYTES} allowed")

    def content(self) -> str | bytes | None:
        try:
            text: str | None = _str_body(self.body)
            return text
        except (msgspec.ValidationError, ValueError):
            pass
        try:
            data: bytes = _bytes_body(self.body)
            return data
        except (msgspec.ValidationError, ValueError):
            raise ValueError("'body': must be str, bytes or None") from None


_str_body = value_decoder(str | None).decode
_bytes_body = value_decoder(bytes).decode


class _Record(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    pass


class Envelope(_Record):
    conversation_id: Ident
    session_id: Ident
    chat_id: Ident
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=TEXT_MAX_CHARS)]
    provider: Ident | None = None
    external_id: Ident | None = None


class MappingRecord(_Record):
    conversation_id: Ident
    provider: Ident
    external_id: Ident
    session_id: Ident
    chat_id: Ident


class ConversationSendArgs(_Args):
    envelope: Envelope

    @property
    def session_id(self) -> str:
        return self.envelope.session_id


class HandoverSetArgs(_Args):
    ref: Ident
    state: Literal["bot", "human", "closed"]


class HandoverGetArgs(_Args):
    ref: Ident


class ConversationMessagesArgs(_Args):
    conversation_id: Ident
    limit: Annotated[int, msgspec.Meta(ge=1, le=CONVERSATION_MESSAGES_MAX)] = CONVERSATION_MESSAGES_MAX


class MappingUpsertArgs(_Args):
    mapping: MappingRecord

    @property
    def session_id(self) -> str:
        return self.mapping.session_id


class MappingGetArgs(_Args):
    conversation_id: Ident


class MappingByProviderArgs(_Args):
    provider: Ident
    external_id: Ident


Handler = Callable[[Services, Caller, Any], Awaitable[Any]]
SyncHandler = Callable[[Services, Caller, Any], Any]


@dataclass(frozen=True, slots=True)
class Verb:
    name: str
    permission: str
    args: type[_Args]
    handler: Handler | SyncHandler
    session_arg: bool = False  # args.session_id is checked against the caller's session scope
    send: bool = False  # a send verb: capability_timeout * send_timeout_factor, and it fires hooks
    sync: bool = False  # the handler never waits: it runs inline, with no task and no timer
    encoded: bool = False  # its answer holds values kept encoded (msgspec.Raw)


async def _send_text(s: Services, c: Caller, a: SendTextArgs) -> Any:
    return await s.messages.send_text(a.session_id, a.chat_id, a.text, caller=c.plugin_id)


async def _reply(s: Services, c: Caller, a: ReplyArgs) -> Any:
    return await s.messages.send_text(a.session_id, a.chat_id, a.text, quoted_id=a.quoted_id, caller=c.plugin_id)


async def _group_info(s: Services, c: Caller, a: GroupInfoArgs) -> Any:
    return await s.engine.get_group_info(a.session_id, a.group_id)


async def _contacts(s: Services, c: Caller, a: SessionOnlyArgs) -> Any:
    return await s.engine.get_contacts(a.session_id)


async def _contact(s: Services, c: Caller, a: ContactByIdArgs) -> Any:
    return await s.engine.get_contact_by_id(a.session_id, a.contact_id)


async def _check_number(s: Services, c: Caller, a: CheckNumberArgs) -> Any:
    return await s.engine.check_number_exists(a.session_id, a.phone)


async def _chats(s: Services, c: Caller, a: SessionOnlyArgs) -> Any:
    return await s.engine.get_chats(a.session_id)


async def _history(s: Services, c: Caller, a: ChatHistoryArgs) -> Any:
    return await s.engine.get_chat_history(a.session_id, a.chat_id, clamp_history_limit(a.limit), a.include_media)


async def _canonical(s: Services, c: Caller, a: ChatOnlyArgs) -> Any:
    return await s.engine.canonical_chat_id(a.session_id, a.chat_id)


def _storage_get(s: Services, c: Caller, a: StorageKeyArgs) -> Any:
    blob = s.storage.get_encoded(c.plugin_id, a.key)
    return [False, None] if blob is None else [True, msgspec.Raw(blob)]


async def _storage_set(s: Services, c: Caller, a: StorageSetArgs) -> Any:
    await s.storage.set_encoded(c.plugin_id, a.key, a.value)
    return None


async def _storage_delete(s: Services, c: Caller, a: StorageKeyArgs) -> Any:
    return await s.storage.delete(c.plugin_id, a.key)


async def _storage_list(s: Services, c: Caller, a: StoragePrefixArgs) -> Any:
    return await s.storage.list_keys(c.plugin_id, a.prefix, after=a.after, limit=a.limit)


async def _net_fetch(s: Services, c: Caller, a: NetFetchArgs) -> Any:
    if s.net is None:
        raise CapabilityError("net.fetch: not available on this host")
    return await s.net.fetch(
        c.plugin_id, a.url, method=a.method, headers=a.headers, body=a.content(), timeout_ms=a.timeout_ms
    )


def _conversations(s: Services, verb: str) -> ConversationStore:
    if s.conversations is None:
        raise CapabilityError(f"{verb}: not available on this host")
    return s.conversations


async def _conversation_send(s: Services, c: Caller, a: ConversationSendArgs) -> Any:
    store = _conversations(s, "conversations.send")
    e = a.envelope
    store.check_room(c.plugin_id, msgspec.to_builtins(e))  # refused before anything is sent
    message = await s.messages.send_text(e.session_id, e.chat_id, e.text, caller=c.plugin_id)
    message_id = message.get("id") if isinstance(message, dict) else None
    await store.record_sent(c.plugin_id, msgspec.to_builtins(e), message_id if isinstance(message_id, str) else None)
    return {"conversationId": e.conversation_id, "message": message}


async def _handover_set(s: Services, c: Caller, a: HandoverSetArgs) -> Any:
    store = _conversations(s, "handover.set")
    chat = store.chat_of(c.plugin_id, a.ref)
    if chat is not None:  # the gate compares the engine's canonical ids (plugbox.handover)
        with contextlib.suppress(EngineError):  # not live now: keep the chat as the plugin linked it
            chat = (chat[0], await s.engine.canonical_chat_id(*chat))
    return await store.set_handover(c.plugin_id, a.ref, a.state, chat)


async def _handover_get(s: Services, c: Caller, a: HandoverGetArgs) -> Any:
    return _conversations(s, "handover.get").handover(c.plugin_id, a.ref)


async def _conversation_messages(s: Services, c: Caller, a: ConversationMessagesArgs) -> Any:
    return _conversations(s, "conversations.messages").messages(c.plugin_id, a.conversation_id, a.limit)


async def _mapping_upsert(s: Services, c: Caller, a: MappingUpsertArgs) -> Any:
    return await _conversations(s, "mappings.upsert").upsert_mapping(c.plugin_id, msgspec.to_builtins(a.mapping))


async def _mapping_get(s: Services, c: Caller, a: MappingGetArgs) -> Any:
    return _conversations(s, "mappings.get").get_mapping(c.plugin_id, a.conversation_id)


async def _mapping_by_provider(s: Services, c: Caller, a: MappingByProviderArgs) -> Any:
    store = _conversations(s, "mappings.get_by_provider")
    return store.get_mapping_by_provider(c.plugin_id, a.provider, a.external_id)


def _table(*verbs: Verb) -> dict[str, Verb]:
    return {v.name: v for v in verbs}


VERBS: dict[str, Verb] = _table(
    Verb("messages.send_text", "messages:send", SendTextArgs, _send_text, session_arg=True, send=True),
    Verb("messages.reply", "messages:send", ReplyArgs, _reply, session_arg=True, send=True),
    Verb("engine.get_group_info", "engine:read", GroupInfoArgs, _group_info, session_arg=True),
    Verb("engine.get_contacts", "engine:read", SessionOnlyArgs, _contacts, session_arg=True),
    Verb("engine.get_contact_by_id", "engine:read", ContactByIdArgs, _contact, session_arg=True),
    Verb("engine.check_number_exists", "engine:read", CheckNumberArgs, _check_number, session_arg=True),
    Verb("engine.get_chats", "engine:read", SessionOnlyArgs, _chats, session_arg=True),
    Verb("engine.get_chat_history", "engine:read", ChatHistoryArgs, _history, session_arg=True),
    Verb("engine.canonical_chat_id", "engine:read", ChatOnlyArgs, _canonical, session_arg=True),
    Verb("storage.get", "storage:use", StorageKeyArgs, _storage_get, sync=True, encoded=True),
    Verb("storage.set", "storage:use", StorageSetArgs, _storage_set),
    Verb("storage.delete", "storage:use", StorageKeyArgs, _storage_delete),
    Verb("storage.list", "storage:use", StoragePrefixArgs, _storage_list),  # a scan: off the loop, its own slot
    Verb("net.fetch", "net:fetch", NetFetchArgs, _net_fetch),
    Verb(
        "conversations.send", "conversation:send", ConversationSendArgs, _conversation_send, session_arg=True, send=True
    ),
    Verb("handover.set", "conversation:send", HandoverSetArgs, _handover_set),
    Verb("handover.get", "conversation:read", HandoverGetArgs, _handover_get),
    Verb("conversations.messages", "conversation:read", ConversationMessagesArgs, _conversation_messages),
    Verb("mappings.upsert", "conversation:send", MappingUpsertArgs, _mapping_upsert, session_arg=True),
    Verb("mappings.get", "conversation:send", MappingGetArgs, _mapping_get),
    Verb("mappings.get_by_provider", "conversation:send", MappingByProviderArgs, _mapping_by_provider),
)
