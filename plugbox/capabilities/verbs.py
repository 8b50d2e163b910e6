"""The capability allowlist: every verb a plugin may call, its permission, its argument schema and
the host service it reaches. Anything not in `VERBS` is an unknown verb.

Argument schemas are msgspec Structs: converting a call's args *is* validating them, so a host
service only ever sees well-typed, length-capped strings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

if TYPE_CHECKING:
    from plugbox.capabilities.router import Caller, Services

__all__ = ["VERBS", "Verb"]

# Identifiers (sessions, chats, contacts, message ids): non-empty, bounded, no control characters.
Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
Text = Annotated[str, msgspec.Meta(max_length=65536)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class _Args(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class SendText(_Args):
    session_id: Ident
    chat_id: Ident
    text: Text


class Reply(_Args):
    session_id: Ident
    chat_id: Ident
    quoted_id: Ident
    text: Text


class SessionOnly(_Args):
    session_id: Ident


class GroupInfo(_Args):
    session_id: Ident
    group_id: Ident


class ContactById(_Args):
    session_id: Ident
    contact_id: Ident


class CheckNumber(_Args):
    session_id: Ident
    phone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ChatOnly(_Args):
    session_id: Ident
    chat_id: Ident


class ChatHistory(_Args):
    session_id: Ident
    chat_id: Ident
    limit: int = 50
    include_media: bool = False


class StorageKey(_Args):
    key: Key


class StorageSet(_Args):
    key: Key
    value: Any


class StoragePrefix(_Args):
    prefix: Annotated[str, msgspec.Meta(max_length=512)] = ""


Handler = Callable[["Services", "Caller", Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Verb:
    name: str
    permission: str
    args: type[_Args]
    handler: Handler
    session_arg: bool = False  # args.session_id is checked against the caller's session scope
    send: bool = False  # send verbs get capability_timeout * send_timeout_factor


async def _send_text(s: Services, c: Caller, a: SendText) -> Any:
    return await s.messages.send_text(a.session_id, a.chat_id, a.text, source=c.plugin_id)


async def _reply(s: Services, c: Caller, a: Reply) -> Any:
    return await s.messages.send_text(a.session_id, a.chat_id, a.text, quoted_id=a.quoted_id, source=c.plugin_id)


async def _group_info(s: Services, c: Caller, a: GroupInfo) -> Any:
    return await s.engine.get_group_info(a.session_id, a.group_id)


async def _contacts(s: Services, c: Caller, a: SessionOnly) -> Any:
    return await s.engine.get_contacts(a.session_id)


async def _contact(s: Services, c: Caller, a: ContactById) -> Any:
    return await s.engine.get_contact_by_id(a.session_id, a.contact_id)


async def _check_number(s: Services, c: Caller, a: CheckNumber) -> Any:
    return await s.engine.check_number_exists(a.session_id, a.phone)


async def _chats(s: Services, c: Caller, a: SessionOnly) -> Any:
    return await s.engine.get_chats(a.session_id)


async def _history(s: Services, c: Caller, a: ChatHistory) -> Any:
    limit = min(max(a.limit, 1), 100)
    return await s.engine.get_chat_history(a.session_id, a.chat_id, limit, a.include_media)


async def _canonical(s: Services, c: Caller, a: ChatOnly) -> Any:
    return await s.engine.canonical_chat_id(a.session_id, a.chat_id)


async def _storage_get(s: Services, c: Caller, a: StorageKey) -> Any:
    found, value = s.storage.get(c.plugin_id, a.key)
    return [found, value]


async def _storage_set(s: Services, c: Caller, a: StorageSet) -> Any:
    await s.storage.set(c.plugin_id, a.key, a.value)
    return None


async def _storage_delete(s: Services, c: Caller, a: StorageKey) -> Any:
    return await s.storage.delete(c.plugin_id, a.key)


async def _storage_list(s: Services, c: Caller, a: StoragePrefix) -> Any:
    return s.storage.list(c.plugin_id, a.prefix)


def _table(*verbs: Verb) -> dict[str, Verb]:
    return {v.name: v for v in verbs}


VERBS: dict[str, Verb] = _table(
    Verb("messages.send_text", "messages:send", SendText, _send_text, session_arg=True, send=True),
    Verb("messages.reply", "messages:send", Reply, _reply, session_arg=True, send=True),
    Verb("engine.get_group_info", "engine:read", GroupInfo, _group_info, session_arg=True),
    Verb("engine.get_contacts", "engine:read", SessionOnly, _contacts, session_arg=True),
    Verb("engine.get_contact_by_id", "engine:read", ContactById, _contact, session_arg=True),
    Verb("engine.check_number_exists", "engine:read", CheckNumber, _check_number, session_arg=True),
    Verb("engine.get_chats", "engine:read", SessionOnly, _chats, session_arg=True),
    Verb("engine.get_chat_history", "engine:read", ChatHistory, _history, session_arg=True),
    Verb("engine.canonical_chat_id", "engine:read", ChatOnly, _canonical, session_arg=True),
    Verb("storage.get", "storage:use", StorageKey, _storage_get),
    Verb("storage.set", "storage:use", StorageSet, _storage_set),
    Verb("storage.delete", "storage:use", StorageKey, _storage_delete),
    Verb("storage.list", "storage:use", StoragePrefix, _storage_list),
)
