"""Search across the plugins that registered a search provider (`ctx.register_search_provider`,
permission `search:provide`).

`SearchService.query(plugin_id, query, timeout)` asks one plugin (`plugin_id`) or every enabled
plugin with a provider (`None`), concurrently, each under `timeout` seconds, and returns one entry
per plugin asked, in plugin-id order:

    {"plugin": id, "ok": True, "results": <whatever the provider returned>}
    {"plugin": id, "ok": False, "error": "<why>"}

A provider that raises, times out or whose worker dies yields `ok: false` for that plugin only; the
others still answer. Naming a plugin that is unknown, not enabled or has no provider is also an
`ok: false` entry, not an exception, so callers (the HTTP API) have one shape to render. Error
strings pass through `plugbox.logrelay.redact` with the plugin's secret config values.

This module calls runtimes through `PluginRuntime.search`; it never sees a worker or a channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from plugbox.loader import PluginEntry, PluginManager, Status
from plugbox.logrelay import redact

__all__ = ["SearchService", "provides_search"]

log = logging.getLogger("plugbox.search")

ERROR_MAX_CHARS = 1024


def provides_search(entry: PluginEntry) -> bool:
    """True when the plugin is enabled and its runtime holds a registered provider."""
    runtime = entry.runtime
    return runtime is not None and entry.status == Status.ENABLED and runtime.has_search


class SearchService:
    def __init__(self, manager: PluginManager, default_timeout: float) -> None:
        self._manager = manager
        self._default_timeout = default_timeout

    async def query(
        self,
        plugin_id: str | None,
        query: Mapping[str, Any],
        timeout: float | None = None,  # noqa: ASYNC109 - a per-provider budget, applied with asyncio.timeout
    ) -> list[dict[str, Any]]:
        if not isinstance(query, Mapping):
            raise TypeError("search query must be an object")
        budget = self._default_timeout if timeout is None else timeout
        if plugin_id is not None:
            targets = [plugin_id]
        else:
            targets = sorted(pid for pid, e in self._manager.entries.items() if provides_search(e))
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._one(pid, dict(query), budget)) for pid in targets]
        return [task.result() for task in tasks]

    async def _one(self, plugin_id: str, query: dict[str, Any], budget: float) -> dict[str, Any]:
        entry = self._manager.entries.get(plugin_id)
        if entry is None:
            return _failed(plugin_id, f"no plugin with id {plugin_id!r}")
        if not provides_search(entry):
            return _failed(plugin_id, f"plugin {plugin_id!r} is not enabled with a search provider")
        runtime = entry.runtime
        assert runtime is not None  # provides_search checked it
        try:
            async with asyncio.timeout(budget):
                results = await runtime.search(query)
        except TimeoutError:
            return _failed(plugin_id, f"search provider did not answer within {budget:g} s")
        except Exception as exc:  # the plugin's failure is its own entry, never ours
            log.info("search provider of plugin %s failed: %s", plugin_id, type(exc).__name__)
            message = redact(f"{type(exc).__name__}: {exc}", entry.secret_values())
            return _failed(plugin_id, message[:ERROR_MAX_CHARS])
        return {"plugin": plugin_id, "ok": True, "results": results}


def _failed(plugin_id: str, error: str) -> dict[str, Any]:
    return {"plugin": plugin_id, "ok": False, "error": error}
