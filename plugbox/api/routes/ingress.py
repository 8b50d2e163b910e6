"""Ingress, the one unauthenticated-by-key surface: `/api/ingress/{plugin}/{instance}/{route}` (OpenWA's
shape; `default` is the plugin's base config, a session id its per-session config) and the first
release's `POST /ingress/{plugin}/{route}`, kept as instance `default`.

A GET is the route's `challenge` handshake, answered by the host (405 without one; 403 on a wrong
token). A POST, each step failing closed: declared route and instance (404, same answer for an unknown
plugin, counted) → body under the smaller of the operator's and the route's cap (413) → signature and
freshness (`plugbox.api.ingress.verify`; 401, 503 if the plugin has no secret) → the route's
`response.preflight` (`session-alive`: 503 with Retry-After when the instance's session is gone) → replay of a
`dedupHeader` id (409) → the `dedupOn` key (400 when the request has none). Then:
- a sync route runs the plugin's `register_webhook` handler under the hook budget (503 not enabled
  or past its share of requests in flight, 504 timeout, 502 worker gone, 500 handler raised); a
  repeated `dedupOn` key answers 200 `duplicate`;
- an async route is queued durably (`plugbox.ingress`) and answered `ackStatus` (202) at once with the
  delivery id; a repeated key gets the same answer with the first delivery's id and status
  `duplicate`; a full queue of the plugin or route answers 429 with Retry-After.

Hooks: only `ingress:error` is fired, only to the plugin that owns the route, and only for requests
that passed the signature check and then failed in dispatch (data: pluginId, route, status, error
with the plugin's secrets redacted), so unauthenticated traffic can never make plugins run. The
`webhook:*` events describe outbound webhook delivery and are not fired here.
"""

from __future__ import annotations

import contextlib
import hmac
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
from plugbox.api.ingress import IngressRefused, ReplayGuard, dedup_digest, secret_at, verify
from plugbox.api.metrics import Metrics
from plugbox.errors import StorageError
from plugbox.host import Host
from plugbox.ingress import DedupKey
from plugbox.lifecycle.ingress import DEFAULT_INSTANCE, IngressTarget

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
    "x-xss-protection", "referrer-policy",
    # What a browser keeps for the whole origin after this response: where it reports the
    # operator's requests (Network Error Logging), where it connects, the client hints it sends on
    # every request, the origin's login status.
    "nel", "report-to", "reporting-endpoints", "alt-svc", "accept-ch", "critical-ch", "set-login",
})
_NO_BODY = frozenset({204, 205, 304})  # statuses whose response carries no body (RFC 9110)
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
_CHALLENGE_MAX_CHARS = 256
_RETRY_AFTER_S = 5

log = logging.getLogger("plugbox.api.ingress")


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
    if status in _NO_BODY:
        body = None  # HTTP forbids one: the server would refuse it mid-response, a traceback per request
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
    """`/api/ingress/{plugin}/{instance}/{route}`: GET is the route's `challenge` handshake, POST a delivery."""
    params = request.path_params
    return await _serve(request, params["plugin_id"], params["instance_id"], params["route"])


async def legacy_ingress(request: Request) -> Response:
    """`POST /ingress/{plugin}/{route}`: the first release's path, kept working as instance `default`."""
    return await _serve(request, request.path_params["plugin_id"], DEFAULT_INSTANCE, request.path_params["route"])


async def _serve(request: Request, plugin_id: str, instance_id: str, route: str) -> Response:
    host: Host = request.app.state.host
    metrics: Metrics = request.app.state.metrics
    target = host.ingress_route(plugin_id, route, instance_id)
    if target is None:
        metrics.ingress_requests.labels("", "unknown_route").inc()  # the URL names no route of ours
        return error_response(404, f"no ingress route {plugin_id}/{instance_id}/{route}")
    if request.method in ("GET", "HEAD"):  # Starlette serves HEAD wherever GET is routed
        outcome, response = _challenge(request, target)
        metrics.ingress_requests.labels(plugin_id, outcome).inc()
        return response
    cap = min(host.settings.ingress_body_max_bytes, target.route.max_body_bytes or host.settings.ingress_body_max_bytes)
    try:
        body = await read_capped(request, cap)
    except ApiError as exc:
        metrics.ingress_requests.labels(plugin_id, "too_large").inc()
        raise exc
    outcome, response = await _deliver(request, host, target, body)
    metrics.ingress_requests.labels(plugin_id, outcome).inc()
    return response


def _challenge(request: Request, target: IngressTarget) -> tuple[str, Response]:
    """The provider's subscription handshake, answered by the host: no plugin code runs."""
    spec = target.route.challenge
    if spec is None:
        return "method_not_allowed", error_response(405, f"route {target.route.route!r} declares no challenge; "
                                                          "deliveries are POSTed")
    expected = secret_at(target.config, spec.token_field)
    if expected is None:
        return "misconfigured", error_response(503, f"the plugin has no verify token configured ({spec.token_field!r})")
    token = request.query_params.get(spec.token_param, "")
    if not hmac.compare_digest(token.encode("utf-8", "replace"), expected.encode("utf-8")):
        return "challenge_refused", error_response(403, f"{spec.token_param} does not match the verify token")
    echo = request.query_params.get(spec.echo_param)
    if not echo or len(echo) > _CHALLENGE_MAX_CHARS or not (echo.isascii() and echo.isprintable()):
        return "challenge_refused", error_response(
            400, f"{spec.echo_param} must be 1..{_CHALLENGE_MAX_CHARS} printable ASCII characters")
    return "challenge", _response({"status": 200, "body": echo})


async def _deliver(request: Request, host: Host, target: IngressTarget, body: bytes) -> tuple[str, Response]:
    """Verify, then queue (async) or run the handler (sync). Returns (metrics outcome, response)."""
    guard: ReplayGuard = request.app.state.replay
    spec, plugin_id = target.route, target.plugin_id
    sig = spec.signature
    now = time.time()
    secret = secret_at(target.config, sig.secret_field) if sig.secret_field else None
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        delivery_id = verify(sig, secret, headers, body, now=now, allow_unsigned=host.settings.allow_unsigned_ingress)
    except IngressRefused as exc:
        return exc.reason, error_response(exc.status, exc.message)
    if "session-alive" in spec.preflight and target.session_id is not None and host.session_gone(target.session_id):
        # Before the replay guard and the dedup key: the sender's retry, once the session is back, is new.
        return "session_gone", error_response(503, f"session {target.session_id!r} is not available; retry later",
                                              headers={"Retry-After": str(_RETRY_AFTER_S)})
    plugin_request = _plugin_request(request, body)  # parsed only once the sender is known
    try:
        dedup = None if spec.dedup_on is None else DedupKey(
            target.instance_id, spec.route, dedup_digest(spec.dedup_on, headers, body, plugin_request.get("json")),
            spec.dedup_window_sec or host.settings.ingress_dedup_window_sec)
    except IngressRefused as exc:
        return exc.reason, error_response(exc.status, exc.message)
    key = (f"{plugin_id}/{target.instance_id}", spec.route, delivery_id) if delivery_id is not None else None
    if key is not None and not guard.claim(key, sig.tolerance_sec, now):
        return "replayed", error_response(409, f"delivery {delivery_id!r} was already received")
    plugin_request.update(instanceId=target.instance_id, sessionId=target.session_id)
    if spec.is_async:
        outcome, response = await _enqueue(host, target, plugin_request, dedup)
    else:
        outcome, response = await _run(host, target, plugin_request, dedup)
    if key is not None and (response.status_code >= 500 or response.status_code == 429):
        guard.release(key)  # we did not take it: the sender's retry must get through
    return outcome, response


_FULL = {
    "plugin_full": "the ingress queue of this plugin is full; retry later",
    "route_full": "the ingress queue of this route is full; retry later",
    "host_full": "the host's ingress queue is full and this plugin holds its share of it; retry later",
}


async def _enqueue(host: Host, target: IngressTarget, plugin_request: dict[str, Any],
                   dedup: DedupKey | None) -> tuple[str, Response]:
    try:
        queued = await host.ingress.submit(target.plugin_id, target.instance_id, target.route.route, plugin_request,
                                           dedup)
    except StorageError as exc:
        log.error("ingress %s/%s: not queued: %s", target.plugin_id, target.route.route, exc)
        return "not_queued", error_response(503, "the ingress queue is unavailable; retry later")
    ack = target.route.ack_status
    if queued.outcome == "queued":
        return "queued", _response({"status": ack, "body": {"id": queued.delivery_id, "status": "queued"}})
    if queued.outcome == "duplicate":
        return "duplicate", _response({"status": ack, "body": {"id": queued.delivery_id, "status": "duplicate"}})
    response = error_response(429, _FULL.get(queued.outcome, _FULL["plugin_full"]))
    response.headers["Retry-After"] = str(_RETRY_AFTER_S)
    return "queue_full", response


async def _run(host: Host, target: IngressTarget, plugin_request: dict[str, Any],
               dedup: DedupKey | None) -> tuple[str, Response]:
    try:
        fresh = dedup is None or await host.ingress.claim(target.plugin_id, dedup)
    except StorageError as exc:  # as for an async route: the sender retries later, nothing ran
        log.error("ingress %s/%s: dedupOn key not claimed: %s", target.plugin_id, target.route.route, exc)
        return "not_claimed", error_response(503, "the ingress dedup store is unavailable; retry later")
    if not fresh:
        return "duplicate", _response({"status": 200, "body": {"status": "duplicate"}})
    about = {"instanceId": target.instance_id, "sessionId": target.session_id}
    reply = await host.dispatch_ingress(target.plugin_id, target.route.route, plugin_request, about)
    if reply.outcome == "ok":
        response = _response(reply.result)
        outcome = "ok" if response.status_code < 500 else "bad_response"
    else:
        response, outcome = error_response(reply.status, reply.message), reply.outcome
    if dedup is not None and response.status_code >= 500:
        await host.ingress.release(target.plugin_id, dedup)  # failed: a retry is not a repeat
    return outcome, response


routes = [
    Route("/api/ingress/{plugin_id}/{instance_id}/{route}", ingress, methods=["GET", "POST"]),
    Route("/ingress/{plugin_id}/{route}", legacy_ingress, methods=["POST"]),
]
