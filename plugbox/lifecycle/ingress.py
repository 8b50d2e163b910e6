"""Host side of ingress (SPEC §9): which plugin route and instance a request is for, and running that
plugin's `register_webhook` handler under a budget (the hook budget for a sync route, whose sender
waits; `ingress_delivery_budget_ms` for a queued delivery).

An instance is `default` (the plugin's base config), an instance the operator created (its own
secrets only, never the base config's; `plugbox.ingress.instances`, looked up through `operator`), or
a session the plugin serves (its per-session config merged over the base, so each session may carry
its own webhook secret), in that order; any other instance is an unknown route.

The HTTP adapter (`plugbox.api.routes.ingress`) verifies signatures and replays, then calls
`dispatch` and renders what it returns; it never touches a runtime. A plugin has at most
`ingress_in_flight_per_plugin` requests unanswered; past that the next is answered 503 at once,
without reaching it (and without firing `ingress:error`, which would make it run more), so a
plugin that holds its requests open holds only its share. A handler past its budget is
a hook timeout like any other (worker pinged, failure counted toward the breaker), and every
failure after a verified request fires `ingress:error` to the owning plugin only, its text through
the plugin's relay (capped, secrets redacted, control characters escaped).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plugbox.errors import PluginError, WorkerGone
from plugbox.hooks import HookBus
from plugbox.lifecycle.manager import PluginManager
from plugbox.manifest import IngressRoute

__all__ = ["DEFAULT_INSTANCE", "IngressReply", "IngressTarget", "OperatorInstance", "dispatch", "find_route"]

log = logging.getLogger("plugbox.lifecycle.ingress")


DEFAULT_INSTANCE = "default"
INSTANCE_PATTERN = re.compile(r"[A-Za-z0-9._@-]{1,128}", re.ASCII)


@dataclass(frozen=True, slots=True)
class IngressTarget:
    """A declared route of a known plugin on one of its instances, with a copy of the instance's
    config (where the route's signature secret lives). `session_id` is None on `default`."""

    plugin_id: str
    route: IngressRoute
    config: dict[str, Any]
    instance_id: str = DEFAULT_INSTANCE
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class IngressReply:
    """What dispatch came to. `outcome` is a metrics label: ok, not_enabled, timeout, worker_gone,
    handler_error, bad_response (queued deliveries only), busy (the plugin had its share of requests
    unanswered). `result` is the handler's answer when ok; otherwise `status` and `message` say what
    the sender should be told."""

    outcome: str
    result: Any = None
    status: int = 200
    message: str = ""


OperatorInstance = Callable[[str, str], tuple[dict[str, Any], str | None] | None]
"""(plugin id, instance id) -> (the instance's secrets as a config document, its bound session), or
None when the operator created no such instance."""


def find_route(manager: PluginManager, plugin_id: str, route: str, instance_id: str = DEFAULT_INSTANCE,
               operator: OperatorInstance | None = None) -> IngressTarget | None:
    if plugin_id not in manager or not INSTANCE_PATTERN.fullmatch(instance_id):
        return None
    entry = manager.get(plugin_id)
    spec = next((r for r in entry.manifest.ingress if r.route == route), None)
    if spec is None:
        return None
    if instance_id == DEFAULT_INSTANCE:
        return IngressTarget(plugin_id, spec, dict(entry.config))
    created = None if operator is None else operator(plugin_id, instance_id)
    if created is not None:  # looked up only for a declared route: unknown plugins cost no query
        secrets, session_id = created
        return IngressTarget(plugin_id, spec, secrets, instance_id, session_id)
    config = entry.hook_config(instance_id)
    return None if config is None else IngressTarget(plugin_id, spec, dict(config), instance_id, instance_id)


async def dispatch(
    manager: PluginManager, bus: HookBus, plugin_id: str, route: str, request: dict[str, Any], *,
    budget_ms: int | None = None, about: dict[str, Any] | None = None, queued: bool = False,
) -> IngressReply:
    """Run the handler under `budget_ms` (default: the hook budget). `about` (instanceId, deliveryId,
    attempt, sessionId) is added to the `ingress:error` a failure fires. For a `queued` delivery an
    answer of 500 or more (or no valid status) is a failure too: no sender sees it, so the plugin is
    told through `ingress:error`, and the queue retries it."""
    running = manager.running(plugin_id)
    if running is None:
        return IngressReply("not_enabled", status=503, message=f"plugin {plugin_id!r} is not enabled")
    entry, runtime = running
    cap = manager.settings.ingress_in_flight_per_plugin
    if entry.ingress_in_flight >= cap:
        return IngressReply("busy", status=503,
                            message=f"plugin {plugin_id!r} has {cap} ingress requests unanswered; retry later")
    budget = (budget_ms or manager.settings.hook_budget_ms) / 1000
    extra = about or {}
    entry.ingress_in_flight += 1
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
        await _fire_error(bus, plugin_id, route, 500, entry.logs.sanitise(str(exc)), extra)
        return IngressReply("handler_error", status=500, message="the plugin's webhook handler failed")
    else:
        status = _status(result)
        if not queued or (status is not None and status < 500):
            return IngressReply("ok", result=result)
        reply = IngressReply("bad_response", status=status or 502,
                             message=f"the plugin's webhook handler answered {status or 'an invalid status'}")
    finally:
        entry.ingress_in_flight -= 1
    await _fire_error(bus, plugin_id, route, reply.status, entry.logs.sanitise(reply.message), extra)
    return reply


def _status(result: Any) -> int | None:
    """The status a handler's answer asks for (200 when it names none), None when invalid."""
    status = result.get("status", 200) if isinstance(result, dict) else 200
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        return None
    return status


async def _fire_error(bus: HookBus, plugin_id: str, route: str, status: int, error: str,
                      about: dict[str, Any]) -> None:
    data = {**about, "pluginId": plugin_id, "route": route, "status": status, "error": error}
    try:
        await bus.execute("ingress:error", data, None, source="ingress", plugin=plugin_id)
    except Exception:
        log.exception("ingress:error hook chain failed")
