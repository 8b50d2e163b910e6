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

import contextlib
import json
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
from plugbox.host import Host

__all__ = ["routes"]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BLOCKED_HEADERS = frozenset({
    "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "trailer", "te",
    "proxy-authenticate", "set-cookie", "server", "date",
    # What a response may tell a browser about the whole API origin, or to run, fetch or show
    # something else: only the host says that.
    "content-security-policy", "content-security-policy-report-only", "x-content-type-options",
    "x-frame-options", "clear-site-data", "strict-transport-security", "service-worker-allowed",
    "refresh", "link", "www-authenticate", "origin-agent-cluster", "permissions-policy",
    "cross-origin-opener-policy", "cross-origin-embedder-policy", "cross-origin-resource-policy",
    "x-xss-protection",
})
_CREDENTIAL_HEADERS = frozenset({"x-api-key", "authorization", "cookie", "proxy-authorization"})
# Types no browser renders as a document that runs script (no HTML, XML, SVG, PDF or JS).
_SAFE_TYPES = frozenset({"text/plain", "application/json", "application/octet-stream"})
_INGRESS_SECURITY_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Referrer-Policy": "no-referrer",
}
_MAX_RESPONSE_HEADERS = 32


def _plugin_request(request: Request, body: bytes) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        if name in _CREDENTIAL_HEADERS:
            continue  # the operator's own credentials, sent by mistake or by a browser, are not the plugin's
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
    """Turn the handler's `{"status", "body", "headers"?}` into an HTTP response, or 502 if malformed.

    The response is served on the API origin, where the dashboard keeps the operator's key: it can
    never be a document that runs script there. Whatever the plugin asks for, it gets a sandboxing
    CSP (a unique opaque origin, no script, no subresource), `nosniff`, and a content type from
    `_SAFE_TYPES` (anything else, `text/html` first, is served as text or bytes)."""
    if not isinstance(result, dict):
        return error_response(502, "the plugin's webhook handler returned an invalid response")
    status = result.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        return error_response(502, "the plugin's webhook handler returned an invalid status")
    headers: dict[str, str] = {}
    media: str | None = None
    raw_headers = result.get("headers") or {}
    if isinstance(raw_headers, dict):
        for name, value in list(raw_headers.items())[:_MAX_RESPONSE_HEADERS]:
            if (isinstance(name, str) and isinstance(value, str) and _TOKEN.fullmatch(name)
                    and value.isprintable() and value.isascii()):
                if name.lower() == "content-type":
                    media = value
                elif name.lower() not in _BLOCKED_HEADERS:
                    headers[name] = value
    body = result.get("body")
    if body is not None and not isinstance(body, str | bytes):
        body, media = JSONResponse(body).body, "application/json"  # the old JSON rendering, same bytes
    fallback = "application/octet-stream" if isinstance(body, bytes) else "text/plain; charset=utf-8"
    headers.update(_INGRESS_SECURITY_HEADERS)
    return Response(body, status_code=status, headers=headers, media_type=_safe_media_type(media, fallback))


def _safe_media_type(media: str | None, fallback: str) -> str:
    """The plugin's content type if its essence is one no browser runs script from, else `fallback`."""
    if media is None:
        return fallback
    essence, _, params = media.partition(";")
    essence = essence.strip().lower()
    if essence not in _SAFE_TYPES:
        return fallback
    charset = params.strip().lower()
    return f"{essence}; {charset}" if charset.startswith("charset=") and _TOKEN.fullmatch(charset[8:]) else essence


async def ingress(request: Request) -> Response:
    host: Host = request.app.state.host
    metrics: Metrics = request.app.state.metrics
    guard: ReplayGuard = request.app.state.replay
    plugin_id, route = request.path_params["plugin_id"], request.path_params["route"]
    try:
        body = await read_capped(request, host.settings.ingress_body_max_bytes)
    except ApiError as exc:
        metrics.ingress_requests.labels("", "too_large").inc()  # not attributed: the route is unchecked
        raise exc
    target = host.ingress_route(plugin_id, route)
    if target is None:
        metrics.ingress_requests.labels("", "unknown_route").inc()  # the URL names no plugin of ours
        return error_response(404, f"no ingress route {plugin_id}/{route}")
    sig = target.route.signature
    now = time.time()
    secret = secret_at(target.config, sig.secret_field) if sig.secret_field else None
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        delivery_id = verify(sig, secret, headers, body, now=now,
                             allow_unsigned=host.settings.allow_unsigned_ingress)
    except IngressRefused as exc:
        metrics.ingress_requests.labels(plugin_id, exc.reason).inc()
        return error_response(exc.status, exc.message)
    key = (plugin_id, route, delivery_id) if delivery_id is not None else None
    if key is not None and not guard.claim(key, sig.tolerance_sec, now):
        metrics.ingress_requests.labels(plugin_id, "replayed").inc()
        return error_response(409, f"delivery {delivery_id!r} was already received")
    reply = await host.dispatch_ingress(plugin_id, route, _plugin_request(request, body))
    if reply.outcome == "ok":
        response = _response(reply.result)
        outcome = "ok" if response.status_code < 500 else "bad_response"
    else:
        response, outcome = error_response(reply.status, reply.message), reply.outcome
    if key is not None and response.status_code >= 500:
        guard.release(key)  # we failed it: the sender's retry must get through
    metrics.ingress_requests.labels(plugin_id, outcome).inc()
    return response


routes = [Route("/ingress/{plugin_id}/{route}", ingress, methods=["POST"])]
