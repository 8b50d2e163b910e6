"""`/health` (no key), `/metrics` (any key), `/openapi.json` and `/dashboard` (static, no key: the page
asks for a key and sends it with every API call)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from plugbox import __version__
from plugbox.api.auth import READ, require
from plugbox.api.dashboard import dashboard_html
from plugbox.api.metrics import Metrics
from plugbox.api.openapi import openapi_document
from plugbox.host import Host

__all__ = ["routes"]

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


async def health(request: Request) -> JSONResponse:
    host: Host = request.app.state.host
    counts: dict[str, int] = {}
    for view in host.plugins():
        counts[view.status] = counts.get(view.status, 0) + 1
    return JSONResponse({"status": "ok", "version": __version__, "plugins": counts})


async def metrics(request: Request) -> Response:
    require(request, READ)
    m: Metrics = request.app.state.metrics
    return Response(m.render(), media_type=PROMETHEUS_TEXT)


async def openapi(_request: Request) -> JSONResponse:
    return JSONResponse(openapi_document())


async def dashboard(_request: Request) -> HTMLResponse:
    return HTMLResponse(dashboard_html(), headers={
        "Content-Security-Policy": "default-src 'none'; script-src 'self' 'unsafe-inline'; "
                                   "style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; "
                                   "frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    })


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/dashboard", dashboard, methods=["GET"]),
]
