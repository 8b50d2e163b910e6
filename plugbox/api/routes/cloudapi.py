"""`/webhooks/cloudapi`: the callback URL an operator registers in Meta's app dashboard, mounted only
when the host runs the Cloud API engine. Unauthenticated by API key (Meta cannot send one); Meta's own
proofs stand in for it.

- `GET`: the subscription handshake; echoes `hub.challenge` as text/plain when `hub.verify_token`
  matches `cloudapi_verify_token`, else 403.
- `POST`: body under `cloudapi_webhook_body_max_bytes` (413) → `X-Hub-Signature-256` (401 missing, 403
  wrong) → decode and hand to `CloudApiEngine.handle_notification` (400 when not a notification) →
  200. Nothing in an unsigned or wrongly signed body is parsed, and no plugin runs for it.

Events run before the 200 is sent, so a plugin's reply has left when Meta gets its answer; Meta
redelivers on a non-200, and the engine drops message ids it has already seen.
"""

from __future__ import annotations

import logging
import re

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from plugbox.api._body import read_capped
from plugbox.api._errors import error_response
from plugbox.engines.cloudapi import SIGNATURE_HEADER, CloudApiEngine, check_handshake, check_signature
from plugbox.errors import IngressRefused
from plugbox.host import Host

__all__ = ["PATH", "RedactVerifyToken", "routes"]

PATH = "/webhooks/cloudapi"
_VERIFY_TOKEN_QUERY = re.compile(r"(hub\.verify_token=)[^&\s]*")


class RedactVerifyToken(logging.Filter):
    """Blank `hub.verify_token` in uvicorn's access log lines: Meta sends the token in the query
    string of the handshake, and the access log records paths with their query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_VERIFY_TOKEN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def _host_engine(request: Request) -> tuple[Host, CloudApiEngine]:
    host: Host = request.app.state.host
    engine = host.engine
    if not isinstance(engine, CloudApiEngine):  # mounted only with this engine; be sure anyway
        raise IngressRefused(404, "not_configured", "the Cloud API engine is not running")
    return host, engine


async def handshake(request: Request) -> Response:
    try:
        host, _ = _host_engine(request)
        q = request.query_params
        challenge = check_handshake(host.settings.cloudapi_verify_token, q.get("hub.mode"),
                                    q.get("hub.verify_token"), q.get("hub.challenge"))
    except IngressRefused as exc:
        return error_response(exc.status, exc.message)
    return PlainTextResponse(challenge)


async def notify(request: Request) -> Response:
    try:
        host, engine = _host_engine(request)
        body = await read_capped(request, host.settings.cloudapi_webhook_body_max_bytes)
        check_signature(host.settings.cloudapi_app_secret, request.headers.get(SIGNATURE_HEADER), body)
        await engine.handle_notification(body)
    except IngressRefused as exc:
        return error_response(exc.status, exc.message)
    return PlainTextResponse("ok")


routes = [
    Route(PATH, handshake, methods=["GET"]),
    Route(PATH, notify, methods=["POST"]),
]
