"""The in-process runtime: how a trusted built-in runs. Same `ctx`, same router, same permission
and scope checks as an untrusted plugin — only the transport is a direct call."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plugbox.errors import PluginStateError
from plugbox.sdk import Context, Plugin
from plugbox.sdk._context import set_config

if TYPE_CHECKING:
    from plugbox.runtime import PluginHandle, RuntimeDeps

__all__ = ["InProcessRuntime"]


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class _Backend:
    def __init__(self, entry: PluginHandle, deps: RuntimeDeps, runtime: InProcessRuntime) -> None:
        self._entry = entry
        self._deps = deps
        self._runtime = runtime

    async def call(self, verb: str, args: dict[str, Any]) -> Any:
        return await self._deps.router.invoke(self._entry, verb, args)

    def register_hook(self, event: str, handler: Callable[..., Any], priority: int) -> None:
        self._deps.bus.register(self._entry.plugin_id, event, handler, priority)

    def register_webhook(self, route: str, handler: Callable[..., Any]) -> None:
        self._entry.check_webhook_route(route)
        self._runtime.webhooks[route] = handler

    def register_search_provider(self, handler: Callable[..., Any]) -> None:
        self._entry.check_search_provider()
        self._runtime.search_provider = handler

    def log(self, level: str, message: str, fields: dict[str, Any]) -> None:
        self._entry.logs.emit(level, message, fields)


class InProcessRuntime:
    confinement = None
    pid = None  # runs in the host process

    def __init__(self, entry: PluginHandle, deps: RuntimeDeps, factory: Callable[[], Plugin]) -> None:
        self._entry = entry
        self._factory = factory
        self._backend = _Backend(entry, deps, self)
        self.webhooks: dict[str, Callable[..., Any]] = {}
        self.search_provider: Callable[..., Any] | None = None
        self.plugin: Plugin | None = None
        self.ctx: Context | None = None

    async def start(self) -> None:
        self.plugin = self._factory()
        self.ctx = Context(self._entry.plugin_id, self._entry.config, self._backend)
        self.plugin.ctx = self.ctx

    def _ready(self) -> tuple[Plugin, Context]:
        if self.plugin is None or self.ctx is None:
            raise PluginStateError(f"plugin {self._entry.plugin_id!r}: runtime not started")
        return self.plugin, self.ctx

    async def lifecycle(self, method: str) -> None:
        plugin, ctx = self._ready()
        await _call(getattr(plugin, method), ctx)

    async def config_changed(self, config: dict[str, Any]) -> None:
        plugin, ctx = self._ready()
        set_config(ctx, config)
        await _call(plugin.on_config_change, ctx, config)

    async def health(self) -> dict[str, Any]:
        plugin, _ = self._ready()
        result = await _call(plugin.health_check)
        return dict(result) if isinstance(result, dict) else {"healthy": bool(result), "message": ""}

    async def webhook(self, route: str, request: dict[str, Any]) -> dict[str, Any]:
        handler = self.webhooks.get(route)
        if handler is None:
            return {"status": 404, "body": {"error": f"no webhook handler for route {route!r}"}}
        result = await _call(handler, request)
        return result if isinstance(result, dict) else {"status": 200, "body": result}

    async def search(self, query: dict[str, Any]) -> Any:
        if self.search_provider is None:
            raise PluginStateError(f"plugin {self._entry.plugin_id!r} registered no search provider")
        return await _call(self.search_provider, query)

    @property
    def has_search(self) -> bool:
        return self.search_provider is not None

    def hook_timed_out(self) -> None:
        """Nothing to ping: a built-in runs in the host's own event loop."""

    async def stop(self) -> None:
        self.webhooks.clear()
        self.search_provider = None
