"""How the HTTP API fails: one exception (`ApiError`) carrying a status and a message, and the mapping
from plugbox's own errors to HTTP statuses. Every error body is `{"error": "..."}` (plus `field` for a
config or manifest failure); a stack trace never reaches a client.

    ApiError                 raised by route code; status + message (+ field)
    plugbox errors           mapped by `from_plugbox`:
      PluginNotFound   → 404      ConfigError   → 422 (field)
      PluginStateError → 409      ManifestError → 422 (field)
      EngineError      → 422      anything else → 500 "internal error" (logged)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from plugbox.errors import ApiError, ConfigError, EngineError, ManifestError, PluginNotFound, PluginStateError

__all__ = ["ApiError", "CatchAll", "error_response", "exception_handlers", "from_plugbox"]

log = logging.getLogger("plugbox.api")


def error_response(status: int, message: str, *, field: str | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


def from_plugbox(exc: Exception) -> ApiError:
    if isinstance(exc, PluginNotFound):
        return ApiError(404, str(exc))
    if isinstance(exc, PluginStateError):
        return ApiError(409, str(exc))
    if isinstance(exc, ConfigError | ManifestError):
        return ApiError(422, str(exc), field=exc.field)
    if isinstance(exc, EngineError):
        return ApiError(422, str(exc))
    raise exc


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, field=exc.field, headers=exc.headers)


async def _plugbox_error(_request: Request, exc: Exception) -> Response:
    err = from_plugbox(exc)
    return error_response(err.status, err.message, field=err.field)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 else "not found"
    if exc.status_code == 405:
        message = "method not allowed"
    return error_response(exc.status_code, str(message), headers=exc.headers)


class CatchAll:
    """ASGI middleware: an unexpected exception becomes a JSON 500 and a log line. (Starlette's own
    500 handler re-raises after answering, which would also put the trace in front of test clients.)"""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error("API %s %s failed: %s: %s", scope.get("method"), scope.get("path"),
                      type(exc).__name__, exc, exc_info=exc)
            if started:
                raise
            response = error_response(500, "internal error; see the server log")
            await response(scope, receive, send)


def exception_handlers() -> dict[Any, Any]:
    return {
        ApiError: _api_error,
        PluginNotFound: _plugbox_error,
        PluginStateError: _plugbox_error,
        ConfigError: _plugbox_error,
        ManifestError: _plugbox_error,
        EngineError: _plugbox_error,
        HTTPException: _http_error,
    }
