"""`/api/plugins…`: list, inspect, install (zip upload or from a URL), enable, disable, uninstall,
health, config and its form (config-ui), per-session config and active sessions. Reads need any API
key, everything that changes state an admin key."""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from plugbox.api._body import read_capped, read_json, replayed
from plugbox.api._errors import ApiError
from plugbox.api.auth import ADMIN, READ, require
from plugbox.api.configui import config_form
from plugbox.api.views import plugin_detail, plugin_json, plugin_sessions, schema_json
from plugbox.errors import DownloadError, ManifestError, ZipRefused
from plugbox.host import Host
from plugbox.lifecycle.view import PluginView

__all__ = ["routes"]

_MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries around the zip in the upload


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


def _id(request: Request) -> str:
    plugin_id: str = request.path_params["plugin_id"]
    return plugin_id


async def _detail(host: Host, view: PluginView) -> dict[str, Any]:
    return plugin_detail(view, await host.health(view.plugin_id), host.plugin_hosts(view.plugin_id))


async def list_plugins(request: Request) -> JSONResponse:
    require(request, READ)
    host = _host(request)
    return JSONResponse({"plugins": [plugin_json(v) for v in host.plugins()],
                         "broken": [{"directory": name, "error": error}
                                    for name, error in sorted(host.broken_directories().items())]})


async def get_plugin(request: Request) -> JSONResponse:
    require(request, READ)
    host = _host(request)
    return JSONResponse(await _detail(host, host.plugin(_id(request))))


_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_URL_MAX_CHARS = 8192


async def _install_from_url(request: Request, host: Host) -> JSONResponse:
    doc = await read_json(request)
    if not isinstance(doc, dict) or not isinstance(doc.get("url"), str) or not doc["url"]:
        raise ApiError(400, 'body must be {"url": "https://...", "sha256"?: "<64 hex digits>"}', field="url")
    url, pin = doc["url"], doc.get("sha256")
    if len(url) > _URL_MAX_CHARS:
        raise ApiError(400, f"url: longer than {_URL_MAX_CHARS} characters", field="url")
    if pin is not None and (not isinstance(pin, str) or not _SHA256.match(pin)):
        raise ApiError(400, "sha256: must be 64 hexadecimal digits", field="sha256")
    try:
        view, updated = await host.install_from_url(url, pin)
    except DownloadError as exc:
        raise ApiError(exc.status, str(exc), field="url") from None
    except ZipRefused as exc:
        raise ApiError(400, str(exc)) from None
    except ManifestError as exc:
        raise ApiError(400, str(exc), field=exc.field) from None
    return JSONResponse(await _detail(host, view), status_code=200 if updated else 201)


async def install_plugin(request: Request) -> JSONResponse:
    require(request, ADMIN)
    host = _host(request)
    cap = host.settings.install_zip_max_bytes
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        return await _install_from_url(request, host)
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(415, "upload the plugin zip as multipart/form-data in the field 'file', "
                            'or send {"url": ...} as application/json')
    too_large = f"plugin zip larger than {cap} bytes (install_zip_max_bytes)"
    body = await read_capped(request, cap + _MULTIPART_OVERHEAD, too_large=too_large)
    form = await replayed(request, body).form(max_files=1, max_fields=8)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "no file in the multipart field 'file'")
        if upload.size is not None and upload.size > cap:
            raise ApiError(413, too_large)
        try:
            view, updated = await host.install(upload.file)
        except ZipRefused as exc:
            raise ApiError(400, str(exc)) from None
        except ManifestError as exc:  # the upload itself is what is wrong: a bad request, like a bad zip
            raise ApiError(400, str(exc), field=exc.field) from None
    finally:
        await form.close()
    return JSONResponse(await _detail(host, view), status_code=200 if updated else 201)


async def enable_plugin(request: Request) -> JSONResponse:
    require(request, ADMIN)
    return JSONResponse(plugin_json(await _host(request).enable(_id(request))))


async def disable_plugin(request: Request) -> JSONResponse:
    require(request, ADMIN)
    return JSONResponse(plugin_json(await _host(request).disable(_id(request))))


async def delete_plugin(request: Request) -> JSONResponse:
    require(request, ADMIN)
    plugin_id = _id(request)
    await _host(request).uninstall(plugin_id)
    return JSONResponse({"id": plugin_id, "uninstalled": True})


async def get_health(request: Request) -> JSONResponse:
    """503 when unhealthy, so that a plain HTTP probe can watch one plugin."""
    require(request, READ)
    host = _host(request)
    view = host.plugin(_id(request))
    health = await host.health(view.plugin_id)
    body = {"id": view.plugin_id, "status": str(view.status), **health}
    return JSONResponse(body, status_code=200 if health["healthy"] else 503)


async def get_config_ui(request: Request) -> JSONResponse:
    require(request, READ)
    view = _host(request).plugin(_id(request))
    return JSONResponse({"id": view.plugin_id, **config_form(schema_json(view), view.config)})


def _config_json(view: PluginView) -> dict[str, Any]:
    return {"config": dict(view.config), "schema": schema_json(view)}


def _session_config_json(view: PluginView, session: str) -> dict[str, Any]:
    return {"session": session, "config": dict(view.session_config.get(session, {})),
            "effective": dict(view.effective_config(session))}


async def get_config(request: Request) -> JSONResponse:
    require(request, READ)
    return JSONResponse(_config_json(_host(request).plugin(_id(request))))


async def put_config(request: Request) -> JSONResponse:
    require(request, ADMIN)
    doc = await read_json(request)
    return JSONResponse(_config_json(await _host(request).set_config(_id(request), doc)))


async def get_session_config(request: Request) -> JSONResponse:
    require(request, READ)
    session = request.path_params["session"]
    return JSONResponse(_session_config_json(_host(request).plugin(_id(request)), session))


async def put_session_config(request: Request) -> JSONResponse:
    require(request, ADMIN)
    doc = await read_json(request)
    session = request.path_params["session"]
    view = await _host(request).set_session_config(_id(request), session, doc)
    return JSONResponse(_session_config_json(view, session))


async def get_sessions(request: Request) -> JSONResponse:
    require(request, READ)
    return JSONResponse(plugin_sessions(_host(request).plugin(_id(request))))


async def put_sessions(request: Request) -> JSONResponse:
    require(request, ADMIN)
    doc = await read_json(request)
    sessions = doc.get("activeSessions") if isinstance(doc, dict) else doc
    if not isinstance(sessions, list) or not all(isinstance(s, str) for s in sessions):
        raise ApiError(400, 'body must be {"activeSessions": ["session", ...]}', field="activeSessions")
    host = _host(request)
    host.plugin(_id(request))  # an unknown plugin is the first 404
    known = {s["id"] for s in host.engine.sessions()}
    unknown = sorted(set(sessions) - known)
    if unknown:  # refused, so that a typo never silently replaces the real session
        raise ApiError(404, f"unknown session {unknown[0]!r} (the engine has: {', '.join(sorted(known)) or 'none'})",
                       field="activeSessions")
    return JSONResponse(plugin_sessions(await host.set_active_sessions(_id(request), sessions)))


_ID = "/api/plugins/{plugin_id}"
routes = [
    Route("/api/plugins", list_plugins, methods=["GET"]),
    Route("/api/plugins", install_plugin, methods=["POST"]),
    Route(_ID, get_plugin, methods=["GET"]),
    Route(_ID, delete_plugin, methods=["DELETE"]),
    Route(_ID + "/enable", enable_plugin, methods=["POST"]),
    Route(_ID + "/disable", disable_plugin, methods=["POST"]),
    Route(_ID + "/health", get_health, methods=["GET"]),
    Route(_ID + "/config-ui", get_config_ui, methods=["GET"]),
    Route(_ID + "/config", get_config, methods=["GET"]),
    Route(_ID + "/config", put_config, methods=["PUT"]),
    Route(_ID + "/sessions", get_sessions, methods=["GET"]),
    Route(_ID + "/sessions", put_sessions, methods=["PUT"]),
    Route(_ID + "/sessions/{session}/config", get_session_config, methods=["GET"]),
    Route(_ID + "/sessions/{session}/config", put_session_config, methods=["PUT"]),
]
