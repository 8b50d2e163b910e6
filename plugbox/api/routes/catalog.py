"""`/api/catalog` (what can be installed without an upload) and `/api/search` (ask the plugins'
search providers over HTTP). Reads need any API key; installing from the catalog an admin key."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from plugbox.api._body import read_json
from plugbox.api._errors import ApiError
from plugbox.api.auth import ADMIN, READ, require
from plugbox.api.views import plugin_detail
from plugbox.errors import ManifestError, ZipRefused
from plugbox.host import Host

__all__ = ["routes"]

SEARCH_TIMEOUT_MAX_MS = 30000


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


async def list_catalog(request: Request) -> JSONResponse:
    require(request, READ)
    host = _host(request)
    return JSONResponse({"plugins": await asyncio.to_thread(host.catalog)})


async def install_from_catalog(request: Request) -> JSONResponse:
    require(request, ADMIN)
    host = _host(request)
    try:
        view, updated = await host.install_from_catalog(request.path_params["plugin_id"])
    except (ZipRefused, ManifestError) as exc:  # the catalog entry itself is broken
        raise ApiError(422, str(exc)) from None
    detail = plugin_detail(view, await host.health(view.plugin_id), host.plugin_hosts(view.plugin_id))
    return JSONResponse(detail, status_code=200 if updated else 201)


async def search(request: Request) -> JSONResponse:
    """`{"query": {...}, "plugin"?: id, "timeoutMs"?: 1..30000}` -> `{"results": [one per plugin]}`."""
    require(request, READ)
    doc = await read_json(request)
    if not isinstance(doc, dict) or not isinstance(doc.get("query"), dict):
        raise ApiError(400, 'body must be {"query": {...}, "plugin"?: "id", "timeoutMs"?: ms}', field="query")
    plugin: Any = doc.get("plugin")
    if plugin is not None and not isinstance(plugin, str):
        raise ApiError(400, "plugin: must be a plugin id", field="plugin")
    timeout_ms: Any = doc.get("timeoutMs")
    if timeout_ms is not None and (type(timeout_ms) is not int or not 1 <= timeout_ms <= SEARCH_TIMEOUT_MAX_MS):
        raise ApiError(400, f"timeoutMs: an integer in 1..{SEARCH_TIMEOUT_MAX_MS}", field="timeoutMs")
    timeout = None if timeout_ms is None else timeout_ms / 1000
    results = await _host(request).search.query(plugin, doc["query"], timeout)
    return JSONResponse({"results": results})


routes = [
    Route("/api/catalog", list_catalog, methods=["GET"]),
    Route("/api/catalog/{plugin_id}/install", install_from_catalog, methods=["POST"]),
    Route("/api/search", search, methods=["POST"]),
]
