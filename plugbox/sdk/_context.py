"""`ctx`: the capability surface a plugin sees (SPEC §3).

There is one implementation for both tiers. It turns each call into `(verb, args)` and hands it to a
backend: in the host process the backend calls the capability router directly; in a worker it sends
a bridge request. Permission and scope are never checked here — the host checks them, once, for
both tiers. What *is* checked here is the plain-data rule, at the sender.
"""

from __future__ import annotations

import json as _json
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from plugbox.errors import CapabilityError
from plugbox.plain import check_plain

__all__ = ["Backend", "Context", "Logger", "set_config"]


class Backend(Protocol):
    """What a Context needs from its tier."""

    def call(self, verb: str, args: dict[str, Any]) -> Awaitable[Any]:
        """The awaitable answer to one capability call (a coroutine or a future)."""
        ...

    def register_hook(self, event: str, handler: Callable[..., Any], priority: int) -> None: ...

    def register_webhook(self, route: str, handler: Callable[..., Any]) -> None: ...

    def register_search_provider(self, handler: Callable[..., Any]) -> None: ...

    def log(self, level: str, message: str, fields: dict[str, Any]) -> None: ...


class Logger:
    """`ctx.logger`: lines are relayed to the host log with the plugin id (rate-limited, redacted)."""

    __slots__ = ("_backend",)

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def _log(self, level: str, message: Any, fields: dict[str, Any]) -> None:
        self._backend.log(level, str(message), fields)

    def debug(self, message: Any, **fields: Any) -> None:
        self._log("debug", message, fields)

    def info(self, message: Any, **fields: Any) -> None:
        self._log("info", message, fields)

    def warning(self, message: Any, **fields: Any) -> None:
        self._log("warning", message, fields)

    def error(self, message: Any, **fields: Any) -> None:
        self._log("error", message, fields)


class _Family:
    """One `ctx.<family>` (`ctx.engine`, `ctx.storage`, ...): each method is one capability verb.
    Named `<Family>Calls` so that `EngineCalls` (what a plugin calls) is never read as the host's
    `plugbox.engines.base.Engine` (what answers)."""

    __slots__ = ("_call",)

    def __init__(self, call: Callable[[str, dict[str, Any]], Any]) -> None:
        self._call = call


class MessagesCalls(_Family):
    async def send_text(self, session_id: str, chat_id: str, text: str) -> Any:
        return await self._call("messages.send_text", {"session_id": session_id, "chat_id": chat_id, "text": text})

    async def reply(self, session_id: str, chat_id: str, quoted_id: str, text: str) -> Any:
        return await self._call(
            "messages.reply",
            {"session_id": session_id, "chat_id": chat_id, "quoted_id": quoted_id, "text": text},
        )


class EngineCalls(_Family):
    async def get_group_info(self, session_id: str, group_id: str) -> Any:
        return await self._call("engine.get_group_info", {"session_id": session_id, "group_id": group_id})

    async def get_contacts(self, session_id: str) -> Any:
        return await self._call("engine.get_contacts", {"session_id": session_id})

    async def get_contact_by_id(self, session_id: str, contact_id: str) -> Any:
        return await self._call("engine.get_contact_by_id", {"session_id": session_id, "contact_id": contact_id})

    async def check_number_exists(self, session_id: str, phone: str) -> Any:
        return await self._call("engine.check_number_exists", {"session_id": session_id, "phone": phone})

    async def get_chats(self, session_id: str) -> Any:
        return await self._call("engine.get_chats", {"session_id": session_id})

    async def get_chat_history(
        self, session_id: str, chat_id: str, limit: int = 50, include_media: bool = False
    ) -> Any:
        return await self._call(
            "engine.get_chat_history",
            {"session_id": session_id, "chat_id": chat_id, "limit": limit, "include_media": include_media},
        )

    async def canonical_chat_id(self, session_id: str, chat_id: str) -> Any:
        return await self._call("engine.canonical_chat_id", {"session_id": session_id, "chat_id": chat_id})


class StorageCalls(_Family):
    async def get(self, key: str, default: Any = None) -> Any:
        found, value = await self._call("storage.get", {"key": key})
        return value if found else default

    async def set(self, key: str, value: Any) -> None:
        await self._call("storage.set", {"key": key, "value": value})

    async def delete(self, key: str) -> bool:
        return bool(await self._call("storage.delete", {"key": key}))

    async def list(self, prefix: str = "", *, after: str = "", limit: int | None = None) -> list[str]:
        """Keys starting with `prefix`, sorted. Without `limit`: all of them, or CapabilityError when
        more than the host's cap (10000 by default) match; with it, a page of at most `limit` keys
        sorting after `after` (pass the last key of the previous page)."""
        args: dict[str, Any] = {"prefix": prefix}
        if after:
            args["after"] = after
        if limit is not None:
            args["limit"] = limit
        return list(await self._call("storage.list", args))


class NetCalls(_Family):
    async def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: str | bytes | None = None,
        timeout_ms: int | None = None,
        json: bool = False,
    ) -> Any:
        """`timeout_ms` None means the host's default (15000 ms unless the operator changed it).
        `json=True` asks for JSON (`Accept: application/json` unless set) and adds the decoded body as
        the result's `json`; a body that is not JSON raises CapabilityError. The decoding runs here, on
        the plugin's side of the bridge: a sandboxed plugin pays for parsing its own responses."""
        sent = dict(headers or {})
        if json and not any(name.lower() == "accept" for name in sent):
            sent["Accept"] = "application/json"
        args: dict[str, Any] = {"url": url, "method": method, "headers": sent, "body": body}
        if timeout_ms is not None:
            args["timeout_ms"] = timeout_ms
        result = await self._call("net.fetch", args)
        if not json:
            return result
        try:
            decoded = _json.loads(result["body"])
        except (ValueError, TypeError, RecursionError) as exc:
            raise CapabilityError(f"net.fetch: the response body (status {result['status']}) is not JSON: "
                                  f"{str(exc)[:200]}") from None
        return {**result, "json": decoded}


class ConversationsCalls(_Family):
    async def send(self, envelope: dict[str, Any]) -> Any:
        return await self._call("conversations.send", {"envelope": envelope})

    async def messages(self, conversation_id: str, limit: int = 100) -> Any:
        """The conversation's latest `limit` (1..100) recorded messages, oldest first."""
        return await self._call("conversations.messages", {"conversation_id": conversation_id, "limit": limit})


class HandoverCalls(_Family):
    async def set(self, ref: str, state: str) -> Any:
        return await self._call("handover.set", {"ref": ref, "state": state})

    async def get(self, ref: str) -> Any:
        """`{"ref", "state", "updatedAt", "sessionId", "chatId"}`, or None if never set."""
        return await self._call("handover.get", {"ref": ref})


class MappingsCalls(_Family):
    async def upsert(self, mapping: dict[str, Any]) -> Any:
        return await self._call("mappings.upsert", {"mapping": mapping})

    async def get(self, conversation_id: str) -> Any:
        return await self._call("mappings.get", {"conversation_id": conversation_id})

    async def get_by_provider(self, provider: str, external_id: str) -> Any:
        return await self._call("mappings.get_by_provider", {"provider": provider, "external_id": external_id})


class Context:
    """The `ctx` handed to a plugin. `config` is a read-only view of the base config."""

    def __init__(self, plugin_id: str, config: Mapping[str, Any], backend: Backend) -> None:
        self.plugin_id = plugin_id
        self._backend = backend
        self._config: Mapping[str, Any] = MappingProxyType(dict(config))
        self.logger = Logger(backend)
        self.messages = MessagesCalls(self._call)
        self.engine = EngineCalls(self._call)
        self.storage = StorageCalls(self._call)
        self.net = NetCalls(self._call)
        self.conversations = ConversationsCalls(self._call)
        self.handover = HandoverCalls(self._call)
        self.mappings = MappingsCalls(self._call)

    @property
    def config(self) -> Mapping[str, Any]:
        return self._config

    def _call(self, verb: str, args: dict[str, Any]) -> Awaitable[Any]:
        # Not a coroutine: each family method awaits the backend's awaitable directly, one frame
        # fewer to suspend and resume per call. A non-plain argument still raises inside the
        # family method's coroutine, when the caller awaits it.
        check_plain(args, "args")
        return self._backend.call(verb, args)

    def register_hook(self, event: str, handler: Callable[..., Any], priority: int = 100) -> None:
        if not callable(handler):
            raise TypeError("register_hook: handler must be callable")
        if type(priority) is not int:
            raise TypeError("register_hook: priority must be an int")
        self._backend.register_hook(event, handler, priority)

    def register_webhook(self, route: str, handler: Callable[..., Any]) -> None:
        if not callable(handler):
            raise TypeError("register_webhook: handler must be callable")
        self._backend.register_webhook(route, handler)

    def register_search_provider(self, handler: Callable[..., Any]) -> None:
        if not callable(handler):
            raise TypeError("register_search_provider: handler must be callable")
        self._backend.register_search_provider(handler)


def set_config(ctx: Context, config: Mapping[str, Any]) -> None:
    """plugbox's seam for a config change: the runtimes (in-process and worker) call this before
    `on_config_change`, so `ctx.config` is the new config when the plugin looks. Not part of the
    plugin-facing API (a plugin's own Context is read-only to it)."""
    ctx._config = MappingProxyType(dict(config))
