"""`/api/plugins…`: list, inspect, install (zip), enable, disable, uninstall, config, per-session
config and active sessions. Reads need any API key, everything that changes state an admin key."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from plugbox.api._body import read_capped, read_json, replayed
from plugbox.api._errors import ApiError
from plugbox.api.auth import ADMIN, READ, require
from plugbox.api.install import PluginInstaller, ZipRefused
from plugbox.host import Host
from plugbox.loader import PluginEntry

__all__ = ["routes"]

RECENT_LOGS = 50
_MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries around the zip in the upload


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


def _entry(request: Request) -> PluginEntry:
    return _host(request).manager.get(request.path_params["plugin_id"])


def _schema_json(entry: PluginEntry) -> dict[str, Any] | None:
    schema = entry.manifest.config_schema
    return schema.to_json() if schema is not None else None


async def detail(host: Host, entry: PluginEntry) -> dict[str, Any]:
    out = entry.describe()
    out.update({
        "description": entry.manifest.description,
        "lastError": entry.error,
        "health": await host.manager.health(entry.plugin_id),
        "configSchema": _schema_json(entry),
        "ingress": [{"route": r.route, "scheme": r.signature.scheme,
                     "path": f"/ingress/{entry.plugin_id}/{r.route}"} for r in entry.manifest.ingress],
        "logs": list(entry.logs.recent)[-RECENT_LOGS:],
    })
    return out


async def list_plugins(request: Request) -> JSONResponse:
    require(request, READ)
    entries = sorted(_host(request).manager.entries.values(), key=lambda e: e.plugin_id)
    return JSONResponse({"plugins": [e.describe() for e in entries]})


async def get_plugin(request: Request) -> JSONResponse:
    require(request, READ)
    return JSONResponse(await detail(_host(request), _entry(request)))


async def install_plugin(request: Request) -> JSONResponse:
    require(request, ADMIN)
    host = _host(request)
    cap = host.settings.install_zip_max_bytes
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(415, "upload the plugin zip as multipart/form-data in the field 'file'")
    body = await read_capped(request, cap + _MULTIPART_OVERHEAD)
    form = await replayed(request, body).form(max_files=1, max_fields=8)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "no file in the multipart field 'file'")
        if upload.size is not None and upload.size > cap:
            raise ApiError(413, f"plugin zip larger than {cap} bytes")
        installer: PluginInstaller = request.app.state.installer
        try:
            entry, updated = await installer.install(upload.file)
        except ZipRefused as exc:
            raise ApiError(400, str(exc)) from None
    finally:
        await form.close()
    return JSONResponse(await detail(host, entry), status_code=200 if updated else 201)


async def enable_plugin(request: Request) -> JSONResponse:
    require(request, ADMIN)
    host = _host(request)
    entry = await host.manager.enable(request.path_params["plugin_id"])
    return JSONResponse(entry.describe())


async def disable_plugin(request: Request) -> JSONResponse:
    require(request, ADMIN)
    entry = await _host(request).manager.disable(request.path_params["plugin_id"])
    return JSONResponse(entry.describe())


async def delete_plugin(request: Request) -> JSONResponse:
    require(request, ADMIN)
    plugin_id = request.path_params["plugin_id"]
    await _host(request).manager.uninstall(plugin_id)
    return JSONResponse({"id": plugin_id, "uninstalled": True})


def _masked(entry: PluginEntry, config: dict[str, Any]) -> dict[str, Any]:
    schema = entry.manifest.config_schema
    return schema.mask(config) if schema is not None else dict(config)


async def get_config(request: Request) -> JSONResponse:
    require(request, READ)
    entry = _entry(request)
    return JSONResponse({"config": _masked(entry, entry.record.config), "schema": _schema_json(entry)})


async def put_config(request: Request) -> JSONResponse:
    require(request, ADMIN)
    doc = await read_json(request)
    entry = _entry(request)
    await _host(request).manager.set_config(entry.plugin_id, doc)
    return JSONResponse({"config": _masked(entry, entry.record.config), "schema": _schema_json(entry)})


async def get_session_config(request: Request) -> JSONResponse:
    require(request, READ)
    entry = _entry(request)
    session = request.path_params["session"]
    return JSONResponse({"session": session,
                         "config": _masked(entry, entry.record.session_config.get(session, {})),
                         "effective": _masked(entry, entry.session_config(session))})


async def put_session_config(request: Request) -> JSONResponse:
    require(request, ADMIN)
    doc = await read_json(request)
    entry = _entry(request)
    session = request.path_params["session"]
    await _host(request).manager.set_session_config(entry.plugin_id, session, doc)
    return JSONResponse({"session": session,
                         "config": _masked(entry, entry.record.session_config.get(session, {})),
                         "effective": _masked(entry, entry.session_config(session))})


def _sessions_view(entry: PluginEntry) -> dict[str, Any]:
    return {"activeSessions": list(entry.record.active_sessions), "allowed": list(entry.manifest.sessions),
            "sessionScoped": entry.manifest.session_scoped}


async def get_sessions(request: Request) -> JSONResponse:
    require(request, READ)
    return JSONResponse(_sessions_view(_entry(request)))


async def put_sessions(request: Request) -> JSONResponse:
    require(request, ADMIN)
    doc = await read_json(request)
    sessions = doc.get("activeSessions") if isinstance(doc, dict) else doc
    if not isinstance(sessions, list) or not all(isinstance(s, str) for s in sessions):
        raise ApiError(400, 'body must be {"activeSessions": ["session", ...]}', field="activeSessions")
    entry = _entry(request)
    await _host(request).manager.set_active_sessions(entry.plugin_id, sessions)
    return JSONResponse(_sessions_view(entry))


_ID = "/api/plugins/{plugin_id}"
routes = [
    Route("/api/plugins", list_plugins, methods=["GET"]),
    Route("/api/plugins", install_plugin, methods=["POST"]),
    Route(_ID, get_plugin, methods=["GET"]),
    Route(_ID, delete_plugin, methods=["DELETE"]),
    Route(_ID + "/enable", enable_plugin, methods=["POST"]),
    Route(_ID + "/disable", disable_plugin, methods=["POST"]),
    Route(_ID + "/config", get_config, methods=["GET"]),
    Route(_ID + "/config", put_config, methods=["PUT"]),
    Route(_ID + "/sessions", get_sessions, methods=["GET"]),
    Route(_ID + "/sessions", put_sessions, methods=["PUT"]),
    Route(_ID + "/sessions/{session}/config", get_session_config, methods=["GET"]),
    Route(_ID + "/sessions/{session}/config", put_session_config, methods=["PUT"]),
]
