"""`/health` (no key), `/metrics` (any key), `/openapi.json` and `/dashboard` with its script and
stylesheet (static, no key: the page asks for a key and sends it with every API call)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from plugbox import __version__
from plugbox.api.auth import READ, require
from plugbox.api.dashboard import CSP, dashboard_asset
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


def _dashboard_file(name: str) -> Response:
    text, media_type = dashboard_asset(name)
    return Response(text, media_type=media_type, headers={
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",  # an upgraded host serves the page and script that go together
    })


async def dashboard(_request: Request) -> Response:
    return _dashboard_file("")


async def dashboard_script(_request: Request) -> Response:
    return _dashboard_file("app.js")


async def dashboard_forms(_request: Request) -> Response:
    return _dashboard_file("forms.js")


async def dashboard_style(_request: Request) -> Response:
    return _dashboard_file("app.css")


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/dashboard", dashboard, methods=["GET"]),
    Route("/dashboard/app.js", dashboard_script, methods=["GET"]),
    Route("/dashboard/forms.js", dashboard_forms, methods=["GET"]),
    Route("/dashboard/app.css", dashboard_style, methods=["GET"]),
]
