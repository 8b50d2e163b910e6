"""`/api/sessions…` and `/api/sent`: the engine's sessions; with the loopback engine also inbound
message injection (which runs the `message:received` chain and waits for its observers, so the
reply is known when the call returns), the sent log, and the simulator's other reports: a session
start with a pairing QR code, a session error, a delivery receipt and a message deletion (each runs
its hook chain before the call returns). With any other engine those answer the engine's refusal,
as for any EngineError."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from plugbox.api._body import read_json
from plugbox.api._errors import ApiError
from plugbox.api.auth import READ, require
from plugbox.host import Host

__all__ = ["routes"]

SENT_DEFAULT_LIMIT = 100
SENT_MAX_LIMIT = 1000
_COUNTER = re.compile(r"-(\d+)$")


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


def _seq(message: dict[str, Any]) -> int:
    """The loopback engine numbers every message it stores; later messages have larger numbers."""
    match = _COUNTER.search(str(message.get("id", "")))
    return int(match.group(1)) if match else -1


def _sent_json(message: dict[str, Any]) -> dict[str, Any]:
    """A sent message as the API shows it: camelCase like every other key (the engine records the
    session under the Python name `session_id`)."""
    out = {k: v for k, v in message.items() if k != "session_id"}
    out["sessionId"] = message.get("session_id")
    return out


async def list_sessions(request: Request) -> JSONResponse:
    require(request, READ)
    host = _host(request)
    sessions = host.engine.sessions()
    if host.cluster is not None:  # a shared database: say which sessions this host runs hooks for
        for session in sessions:
            session["leased"] = host.cluster.owns(session["id"])
    return JSONResponse({"sessions": sessions})


async def inject_message(request: Request) -> JSONResponse:
    require(request, READ)
    host = _host(request)
    session = request.path_params["session"]
    doc = await read_json(request)
    if not isinstance(doc, dict):
        raise ApiError(400, 'body must be {"chatId": "...", "body": "...", "sender"?: "..."}')
    for key in ("chatId", "body"):
        if not isinstance(doc.get(key), str):
            raise ApiError(422, f"{key!r} is required and must be a string", field=key)
    sender = doc.get("sender")
    if sender is not None and not isinstance(sender, str):
        raise ApiError(422, "'sender' must be a string", field="sender")
    if session not in {s["id"] for s in host.engine.sessions()}:
        raise ApiError(404, f"unknown session {session!r}")
    message = await host.inject_inbound(session, doc["chatId"], doc["body"], sender=sender)
    after = _seq(message)
    sent = [m for m in host.loopback.sent if m.get("session_id") == session and _seq(m) > after]
    return JSONResponse({"message": message, "sent": [_sent_json(m) for m in sent]})


def _known(host: Host, session: str) -> None:
    if session not in {s["id"] for s in host.engine.sessions()}:
        raise ApiError(404, f"unknown session {session!r}")


async def _optional_doc(request: Request, key: str, kind: type) -> Any:
    """The optional `key` of an optional JSON object body."""
    if not await request.body():
        return None
    doc = await read_json(request)
    if not isinstance(doc, dict):
        raise ApiError(400, f'body must be a JSON object, e.g. {{"{key}": ...}}')
    value = doc.get(key)
    if value is not None and not isinstance(value, kind):
        raise ApiError(422, f"{key!r} must be a {kind.__name__}", field=key)
    return value


async def start_session(request: Request) -> JSONResponse:
    require(request, READ)
    host, session = _host(request), request.path_params["session"]
    _known(host, session)
    pair = await _optional_doc(request, "pair", bool)
    await host.loopback.start_session(session, pair=bool(pair))
    return JSONResponse({"session": session, "qr": host.loopback.qr_code(session) if pair else None})


async def fail_session(request: Request) -> JSONResponse:
    require(request, READ)
    host, session = _host(request), request.path_params["session"]
    _known(host, session)
    reason = await _optional_doc(request, "reason", str)
    await host.loopback.fail_session(session, reason or "simulated engine failure")
    return JSONResponse({"session": session, "status": "error"})


async def ack_message(request: Request) -> JSONResponse:
    require(request, READ)
    host, session = _host(request), request.path_params["session"]
    _known(host, session)
    status = await _optional_doc(request, "status", str)
    return JSONResponse(await host.loopback.ack(session, request.path_params["message"], status))


async def delete_message(request: Request) -> JSONResponse:
    require(request, READ)
    host, session = _host(request), request.path_params["session"]
    _known(host, session)
    return JSONResponse(await host.loopback.delete_message(session, request.path_params["message"]))


async def list_sent(request: Request) -> JSONResponse:
    require(request, READ)
    session = request.query_params.get("session")
    raw_limit = request.query_params.get("limit", str(SENT_DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= SENT_MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {SENT_MAX_LIMIT}")
    sent = [m for m in _host(request).loopback.sent if session is None or m.get("session_id") == session]
    return JSONResponse({"sent": [_sent_json(m) for m in sent[-int(raw_limit):]]})


routes = [
    Route("/api/sessions", list_sessions, methods=["GET"]),
    Route("/api/sessions/{session}/messages", inject_message, methods=["POST"]),
    Route("/api/sessions/{session}/start", start_session, methods=["POST"]),
    Route("/api/sessions/{session}/error", fail_session, methods=["POST"]),
    Route("/api/sessions/{session}/messages/{message}/ack", ack_message, methods=["POST"]),
    Route("/api/sessions/{session}/messages/{message}", delete_message, methods=["DELETE"]),
    Route("/api/sent", list_sent, methods=["GET"]),
]
