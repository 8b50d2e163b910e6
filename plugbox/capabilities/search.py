"""Search across the plugins that registered a search provider (`ctx.register_search_provider`,
permission `search:provide`).

`SearchService.query(plugin_id, query, timeout)` asks one plugin (`plugin_id`) or every enabled
plugin with a provider (`None`), concurrently, each under `timeout` seconds, and returns one entry
per plugin asked, in plugin-id order:

    {"plugin": id, "ok": True, "results": <whatever the provider returned>}
    {"plugin": id, "ok": False, "error": "<why>"}

A provider that raises, times out or whose worker dies yields `ok: false` for that plugin only; the
others still answer. A timeout is also charged to the plugin (`on_timeout`: the host pings its
worker for liveness and counts it toward the breaker, as for a hook that ran past its budget), so a
provider stuck in a loop ends like a stuck hook handler; its request no longer counts on its
channel's books once the wait is cancelled. Naming a plugin that is unknown, not enabled or has no
provider is also an `ok: false` entry, not an exception, so callers (the HTTP API) have one shape
to render. Error strings are plugin text returned by the API: they pass through
`plugbox.logrelay.sanitise` (the plugin's secret config values redacted, control characters
escaped, length capped).

This module sees providers only as `Provider`s the host hands it (each plugin's search call and
its secrets); it never sees the lifecycle, a worker or a channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from plugbox.logrelay import sanitise

__all__ = ["Provider", "SearchService"]

log = logging.getLogger("plugbox.search")

ERROR_MAX_CHARS = 1024


@dataclass(frozen=True, slots=True)
class Provider:
    """An enabled plugin's registered search provider."""

    plugin_id: str
    search: Callable[[dict[str, Any]], Awaitable[Any]]
    secrets: Callable[[], list[str]]  # the plugin's secret config values, redacted from errors


class SearchService:
    def __init__(
        self,
        providers: Callable[[], Mapping[str, Provider]],
        known: Callable[[str], bool],
        default_timeout: float,
        on_timeout: Callable[[str], None] | None = None,
    ) -> None:
        self._providers = providers  # every current provider, by plugin id
        self._on_timeout = on_timeout
        self._known = known  # whether a plugin id is known at all (for the error message)
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
        providers = self._providers()
        targets = [plugin_id] if plugin_id is not None else sorted(providers)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._one(pid, providers.get(pid), dict(query), budget)) for pid in targets]
        return [task.result() for task in tasks]

    async def _one(self, plugin_id: str, provider: Provider | None, query: dict[str, Any],
                   budget: float) -> dict[str, Any]:
        if provider is None:
            if not self._known(plugin_id):
                return _failed(plugin_id, f"no plugin with id {plugin_id!r}")
            return _failed(plugin_id, f"plugin {plugin_id!r} is not enabled with a search provider")
        try:
            async with asyncio.timeout(budget):
                results = await provider.search(query)
        except TimeoutError:
            if self._on_timeout is not None:
                self._on_timeout(plugin_id)
            return _failed(plugin_id, f"search provider did not answer within {budget:g} s")
        except Exception as exc:  # the plugin's failure is its own entry, never ours
            log.info("search provider of plugin %s failed: %s", plugin_id, type(exc).__name__)
            return _failed(plugin_id, sanitise(f"{type(exc).__name__}: {exc}", provider.secrets(), ERROR_MAX_CHARS))
        return {"plugin": plugin_id, "ok": True, "results": results}


def _failed(plugin_id: str, error: str) -> dict[str, Any]:
    return {"plugin": plugin_id, "ok": False, "error": error}
