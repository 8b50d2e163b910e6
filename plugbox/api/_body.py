"""Reading request bodies under a cap, and JSON bodies that fail as 400 with a clear message."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from plugbox.api._errors import ApiError

__all__ = ["JSON_BODY_MAX_BYTES", "read_capped", "read_json", "replayed"]

JSON_BODY_MAX_BYTES = 1 << 20  # management JSON bodies (config, sessions, messages)


async def read_capped(request: Request, cap: int, *, too_large: str | None = None) -> bytes:
    """The whole body, or 413 as soon as it is known to be longer than `cap` (from Content-Length,
    else while streaming). `too_large` is the 413's message when `cap` is not the limit the user set
    (an upload's cap plus its multipart framing must still name the upload's own limit)."""
    message = too_large or f"request body larger than {cap} bytes"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise ApiError(413, message)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ApiError(413, message)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, cap: int = JSON_BODY_MAX_BYTES) -> Any:
    raw = await read_capped(request, cap)
    if not raw.strip():
        raise ApiError(400, "request body must be JSON; it is empty")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None


def replayed(request: Request, body: bytes) -> Request:
    """A copy of `request` whose body is `body` (already read under a cap), for Starlette's parsers."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)
