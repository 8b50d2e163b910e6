"""The API's JSON for a plugin, built from a `PluginView` (the host's read-only snapshot): the
camelCase shapes the HTTP API and the dashboard document. Only this module knows them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from plugbox.lifecycle.failures import Failure
from plugbox.lifecycle.hosts import HostReport
from plugbox.lifecycle.view import PluginView

__all__ = ["plugin_detail", "plugin_json", "plugin_sessions", "schema_json"]

RECENT_LOGS = 50


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def failure_json(failure: Failure | None) -> dict[str, Any] | None:
    if failure is None:
        return None
    return {"message": failure.message, "class": str(failure.kind), "timestamp": _iso(failure.at)}


def host_json(report: HostReport) -> dict[str, Any]:
    return {"host": report.host, "status": str(report.status), "error": report.error,
            "consecutiveFailures": report.consecutive_failures,
            "updatedAt": _iso(report.updated_at) if report.updated_at else None,
            "live": report.live, "this": report.this}


def plugin_json(view: PluginView) -> dict[str, Any]:
    """The summary of one plugin (list, enable, disable)."""
    return {
        "id": view.plugin_id,
        "name": view.manifest.name,
        "version": view.manifest.version,
        "tier": "builtin" if view.builtin else "sandboxed",
        "status": str(view.status),
        "error": view.error,
        "enabled": view.enabled,
        "permissions": list(view.permissions),
        "sessions": list(view.manifest.sessions),
        "activeSessions": list(view.active_sessions),
        "config": dict(view.config),
        "confinement": None if view.confinement is None else [dict(layer) for layer in view.confinement],
        "degraded": view.degraded,
        "consecutiveFailures": view.consecutive_failures,
        "lastError": failure_json(view.last_error),
        "failures": dict(view.failure_counts),
        "warnings": list(view.warnings),
        "openwa": {"minOpenWAVersion": view.manifest.openwa.min_openwa_version,
                   "testedOpenWAVersion": view.manifest.openwa.tested_openwa_version},
    }


def schema_json(view: PluginView) -> dict[str, Any] | None:
    schema = view.manifest.config_schema
    return schema.to_json() if schema is not None else None


def plugin_detail(view: PluginView, health: dict[str, Any], hosts: list[HostReport]) -> dict[str, Any]:
    """Everything about one plugin (get, install). `status` and `error` are this host's; `hosts`
    holds every host's (one entry on SQLite)."""
    out = plugin_json(view)
    out.update({
        "hosts": [host_json(h) for h in hosts],
        "description": view.manifest.description,
        "recentFailures": [failure_json(f) for f in view.recent_failures],
        "health": health,
        "configSchema": schema_json(view),
        "ingress": [{"route": r.route, "scheme": r.signature.scheme, "mode": r.mode,
                     "path": f"/api/ingress/{view.plugin_id}/default/{r.route}",
                     "legacyPath": f"/ingress/{view.plugin_id}/{r.route}"} for r in view.manifest.ingress],
        "logs": [dict(line) for line in view.logs[-RECENT_LOGS:]],
    })
    return out


def plugin_sessions(view: PluginView) -> dict[str, Any]:
    return {"activeSessions": list(view.active_sessions), "allowed": list(view.manifest.sessions),
            "sessionScoped": view.manifest.session_scoped}
