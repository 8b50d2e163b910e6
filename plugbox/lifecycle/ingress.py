"""Host side of ingress (SPEC §9): which plugin route a request is for, and running that plugin's
`register_webhook` handler under the hook budget.

The HTTP adapter (`plugbox.api.routes.ingress`) verifies signatures and replays, then calls
`dispatch` and renders what it returns; it never touches a runtime. A handler past its budget is
a hook timeout like any other (worker pinged, failure counted toward the breaker), and every
failure after a verified request fires `ingress:error` to the owning plugin only, its text through
the plugin's relay (capped, secrets redacted, control characters escaped).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from plugbox.errors import PluginError, WorkerGone
from plugbox.hooks import HookBus
from plugbox.lifecycle.manager import PluginManager
from plugbox.manifest import IngressRoute

__all__ = ["IngressReply", "IngressTarget", "dispatch", "find_route"]

log = logging.getLogger("plugbox.lifecycle.ingress")


@dataclass(frozen=True, slots=True)
class IngressTarget:
    """A declared route of a known plugin, with a copy of its base config (where the route's
    signature secret lives)."""

    plugin_id: str
    route: IngressRoute
    config: dict[str, Any]  # a copy of the plugin's base config, where the secret field lives


@dataclass(frozen=True, slots=True)
class IngressReply:
    """What dispatch came to. `outcome` is a metrics label: ok, not_enabled, timeout, worker_gone,
    handler_error. `result` is the handler's answer when ok; otherwise `status` and `message` say
    what the sender should be told."""

    outcome: str
    result: Any = None
    status: int = 200
    message: str = ""


def find_route(manager: PluginManager, plugin_id: str, route: str) -> IngressTarget | None:
    if plugin_id not in manager:
        return None
    entry = manager.get(plugin_id)
    spec = next((r for r in entry.manifest.ingress if r.route == route), None)
    return None if spec is None else IngressTarget(plugin_id, spec, dict(entry.config))


async def dispatch(
    manager: PluginManager, bus: HookBus, plugin_id: str, route: str, request: dict[str, Any]
) -> IngressReply:
    running = manager.running(plugin_id)
    if running is None:
        return IngressReply("not_enabled", status=503, message=f"plugin {plugin_id!r} is not enabled")
    entry, runtime = running
    budget = manager.settings.hook_budget_ms / 1000
    try:
        async with asyncio.timeout(budget):
            result = await runtime.webhook(route, request)
    except TimeoutError:
        manager.hook_timed_out(plugin_id)  # an unresponsive worker is then killed by the liveness check
        reply = IngressReply("timeout", status=504,
                             message=f"the plugin's webhook handler did not answer within {budget:g} s")
    except WorkerGone:
        reply = IngressReply("worker_gone", status=502, message=f"plugin {plugin_id!r} worker is gone")
    except PluginError as exc:
        entry.logs.emit("error", f"webhook {route!r} handler failed: {exc}")
        await _fire_error(bus, plugin_id, route, 500, entry.logs.sanitise(str(exc)))
        return IngressReply("handler_error", status=500, message="the plugin's webhook handler failed")
    else:
        return IngressReply("ok", result=result)
    await _fire_error(bus, plugin_id, route, reply.status, entry.logs.sanitise(reply.message))
    return reply


async def _fire_error(bus: HookBus, plugin_id: str, route: str, status: int, error: str) -> None:
    data = {"pluginId": plugin_id, "route": route, "status": status, "error": error}
    try:
        await bus.execute("ingress:error", data, None, source="ingress", plugin=plugin_id)
    except Exception:
        log.exception("ingress:error hook chain failed")
