"""`POST /ingress/{plugin}/{route}`: the one unauthenticated-by-key route. Order, each step failing
closed: body under its cap (413) → declared route (404, same answer for an unknown plugin, counted)
→ signature and freshness (`plugbox.api.ingress.verify`; 401, 503 if the plugin has no secret) →
replay (409) → plugin enabled (503) → the plugin's `register_webhook` handler under the hook budget
(504 on timeout, 502 when the worker is gone, 500 when the handler raised).

Hooks: only `ingress:error` is fired, only to the plugin that owns the route, and only for requests
that passed the signature check and then failed in dispatch (data: pluginId, route, status, error
with the plugin's secrets redacted), so unauthenticated traffic can never make plugins run. The
`webhook:*` events describe outbound webhook delivery and are not fired here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from plugbox.api._body import read_capped
from plugbox.api._errors import ApiError, error_response
from plugbox.api.ingress import IngressRefused, ReplayGuard, secret_at, verify
from plugbox.api.metrics import Metrics
from plugbox.errors import PluginError, WorkerGone
from plugbox.host import Host
from plugbox.loader import PluginEntry, Status
from plugbox.logrelay import redact
from plugbox.manifest import IngressRoute

__all__ = ["routes"]

log = logging.getLogger("plugbox.api.ingress")

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BLOCKED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                              "trailer", "te", "proxy-authenticate", "set-cookie", "server", "date"})
_MAX_RESPONSE_HEADERS = 32


def _find(host: Host, plugin_id: str, route: str) -> tuple[PluginEntry, IngressRoute] | None:
    entry = host.manager.entries.get(plugin_id)
    if entry is None:
        return None
    spec = next((r for r in entry.manifest.ingress if r.route == route), None)
    return (entry, spec) if spec is not None else None


def _plugin_request(request: Request, body: bytes) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    query: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        query.setdefault(name, value)
    out: dict[str, Any] = {"method": request.method, "path": request.url.path, "headers": headers, "query": query}
    try:
        out["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        out["body"] = body
    if body:
        with contextlib.suppress(UnicodeDecodeError, ValueError, RecursionError):
            out["json"] = json.loads(body)
    return out


def _response(result: Any) -> Response:
    """Turn the handler's `{"status", "body", "headers"?}` into an HTTP response, or 502 if malformed."""
    if not isinstance(result, dict):
        return error_response(502, "the plugin's webhook handler returned an invalid response")
    status = result.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        return error_response(502, "the plugin's webhook handler returned an invalid status")
    headers: dict[str, str] = {}
    raw_headers = result.get("headers") or {}
    if isinstance(raw_headers, dict):
        for name, value in list(raw_headers.items())[:_MAX_RESPONSE_HEADERS]:
            if (isinstance(name, str) and isinstance(value, str) and _TOKEN.fullmatch(name)
                    and name.lower() not in _BLOCKED_HEADERS and value.isprintable() and value.isascii()):
                headers[name] = value
    body = result.get("body")
    if body is None:
        return Response(status_code=status, headers=headers)
    if isinstance(body, bytes):
        return Response(body, status_code=status, headers=headers,
                        media_type=headers.pop("content-type", None) or "application/octet-stream")
    if isinstance(body, str):
        media = next((v for k, v in headers.items() if k.lower() == "content-type"), "text/plain; charset=utf-8")
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        return Response(body, status_code=status, headers=headers, media_type=media)
    return JSONResponse(body, status_code=status, headers=headers)


async def _fire_error(host: Host, entry: PluginEntry, route: str, status: int, error: str) -> None:
    data = {"pluginId": entry.plugin_id, "route": route, "status": status,
            "error": redact(error, entry.secret_values())}
    try:
        await host.bus.execute("ingress:error", data, None, source="ingress", plugin=entry.plugin_id)
    except Exception:
        log.exception("ingress:error hook chain failed")


async def _dispatch(host: Host, entry: PluginEntry, route: str, request: dict[str, Any]) -> tuple[Response, str]:
    runtime = entry.runtime
    if runtime is None or entry.status != Status.ENABLED:
        return error_response(503, f"plugin {entry.plugin_id!r} is not enabled"), "not_enabled"
    budget = host.settings.hook_budget_ms / 1000
    try:
        async with asyncio.timeout(budget):
            result = await runtime.webhook(route, request)
    except TimeoutError:
        ping = getattr(runtime, "hook_timed_out", None)
        if ping is not None:
            ping()  # an unresponsive worker is then killed by the liveness check
        host.manager.runtime_timed_out(entry)
        message = f"the plugin's webhook handler did not answer within {budget:g} s"
        await _fire_error(host, entry, route, 504, message)
        return error_response(504, message), "timeout"
    except WorkerGone:
        message = f"plugin {entry.plugin_id!r} worker is gone"
        await _fire_error(host, entry, route, 502, message)
        return error_response(502, message), "worker_gone"
    except PluginError as exc:
        entry.logs.emit("error", f"webhook {route!r} handler failed: {exc}")
        await _fire_error(host, entry, route, 500, str(exc))
        return error_response(500, "the plugin's webhook handler failed"), "handler_error"
    response = _response(result)
    return response, "ok" if response.status_code < 500 else "bad_response"


async def ingress(request: Request) -> Response:
    host: Host = request.app.state.host
    metrics: Metrics = request.app.state.metrics
    guard: ReplayGuard = request.app.state.replay
    plugin_id, route = request.path_params["plugin_id"], request.path_params["route"]
    try:
        body = await read_capped(request, host.settings.ingress_body_max_bytes)
    except ApiError as exc:
        metrics.ingress_requests.labels("too_large").inc()
        raise exc
    found = _find(host, plugin_id, route)
    if found is None:
        metrics.ingress_requests.labels("unknown_route").inc()
        return error_response(404, f"no ingress route {plugin_id}/{route}")
    entry, spec = found
    sig = spec.signature
    now = time.time()
    secret = secret_at(entry.record.config, sig.secret_field) if sig.secret_field else None
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        delivery_id = verify(sig, secret, headers, body, now=now,
                             allow_unsigned=host.settings.allow_unsigned_ingress)
    except IngressRefused as exc:
        metrics.ingress_requests.labels(exc.reason).inc()
        return error_response(exc.status, exc.message)
    key = (plugin_id, route, delivery_id) if delivery_id is not None else None
    if key is not None and not guard.claim(key, sig.tolerance_sec, now):
        metrics.ingress_requests.labels("replayed").inc()
        return error_response(409, f"delivery {delivery_id!r} was already received")
    response, outcome = await _dispatch(host, entry, route, _plugin_request(request, body))
    if key is not None and response.status_code >= 500:
        guard.release(key)  # we failed it: the sender's retry must get through
    metrics.ingress_requests.labels(outcome).inc()
    return response


routes = [Route("/ingress/{plugin_id}/{route}", ingress, methods=["POST"])]
