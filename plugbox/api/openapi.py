"""The OpenAPI 3.1 document of the HTTP API, written by hand (the routes are few and stable); a test
checks it lists every route the app serves."""

from __future__ import annotations

from typing import Any

from plugbox import __version__

__all__ = ["openapi_document"]

_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_JSON = {"application/json": {"schema": {"type": "object"}}}


def _op(summary: str, *, role: str | None = "read", body: bool = False, params: tuple[str, ...] = (),
        statuses: tuple[int, ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params],
        "responses": {"200": {"description": "ok", "content": _JSON}, **{str(s): _ERROR for s in statuses}},
    }
    if role is not None:
        op["security"] = [{"apiKey": []}, {"bearer": []}]
        op["x-plugbox-role"] = role
        op["responses"].update({"401": _ERROR, "403": _ERROR} if role == "admin" else {"401": _ERROR})
    if body:
        op["requestBody"] = {"required": True, "content": _JSON}
        op["responses"]["400"] = _ERROR
    return op


# What each host sharing the database last observed of a plugin (docs/postgres.md); one entry,
# this host, on SQLite.
_PLUGIN_HOST = {
    "type": "object",
    "required": ["host", "status", "error", "consecutiveFailures", "updatedAt", "live", "this"],
    "properties": {
        "host": {"type": "string", "description": "the host's id (setting host_id)"},
        "status": {"enum": ["installed", "enabled", "disabled", "error"]},
        "error": {"type": ["string", "null"]},
        "consecutiveFailures": {"type": "integer"},
        "updatedAt": {"type": ["string", "null"], "format": "date-time",
                      "description": "when that host last wrote this status (its own clock)"},
        "live": {"type": "boolean", "description": "false: the host is not connected now; its status is its last"},
        "this": {"type": "boolean", "description": "the host answering this request"},
    },
}
_PLUGIN_DETAIL = {
    "type": "object",
    "description": "status, error, lastError and recentFailures are the answering host's; enabled and config are "
                   "the operator's, shared by every host",
    "properties": {
        "id": {"type": "string"},
        "status": {"enum": ["installed", "enabled", "disabled", "error"]},
        "error": {"type": ["string", "null"]},
        "enabled": {"type": "boolean"},
        "hosts": {"type": "array", "items": {"$ref": "#/components/schemas/PluginHost"}},
    },
}


def _with_schema(op: dict[str, Any], name: str) -> dict[str, Any]:
    op["responses"]["200"] = {"description": "ok", "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}
    return op


def openapi_document() -> dict[str, Any]:
    pid = ("plugin_id",)
    return {
        "openapi": "3.1.0",
        "info": {"title": "plugbox", "version": __version__,
                 "description": "Operator API of a plugbox host. Management needs an admin API key."},
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}, "field": {"type": "string"}}},
                        "PluginDetail": _PLUGIN_DETAIL, "PluginHost": _PLUGIN_HOST},
        },
        "paths": {
            "/health": {"get": _op("Liveness of the host", role=None)},
            "/metrics": {"get": _op("Prometheus metrics (text format)")},
            "/openapi.json": {"get": _op("This document", role=None)},
            "/dashboard": {"get": _op("Operator dashboard (HTML; it asks for an API key)", role=None)},
            "/dashboard/app.js": {"get": _op("The dashboard's script", role=None)},
            "/dashboard/forms.js": {"get": _op("The dashboard's form script", role=None)},
            "/dashboard/app.css": {"get": _op("The dashboard's stylesheet", role=None)},
            "/": {"get": {**_op("Redirects to /dashboard", role=None),
                          "responses": {"307": {"description": "redirect to /dashboard"}}}},
            "/docs": {"get": _op("This API reference, rendered from /openapi.json (HTML)", role=None)},
            "/api/plugins": {
                "get": _op("List plugins, and the plugins-dir entries that failed to load (broken)"),
                "post": {**_op("Install or update a plugin from a zip (multipart field 'file'), or from a URL "
                               "(JSON {url, sha256?}, fetched through the net.fetch guard)", role="admin",
                               statuses=(400, 413, 415, 422, 502, 504)),
                         "requestBody": {"required": True, "content": {
                             "multipart/form-data": {"schema": {
                                 "type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
                             "application/json": {"schema": {
                                 "type": "object", "required": ["url"],
                                 "properties": {"url": {"type": "string"}, "sha256": {"type": "string"}}}}}}},
            },
            "/api/catalog": {"get": _op("Plugins the catalog directory offers to install")},
            "/api/catalog/{plugin_id}/install": {
                "post": _op("Install or update a catalog plugin", role="admin", params=pid, statuses=(404, 422)),
            },
            "/api/search": {
                "post": _op("Ask the search providers {query, plugin?, timeoutMs?}; one entry per plugin", body=True),
            },
            "/api/plugins/{plugin_id}/health": {
                "get": _op("Run the plugin's health_check; 503 when unhealthy", params=pid, statuses=(404, 503)),
            },
            "/api/plugins/{plugin_id}/config-ui": {
                "get": _op("The config form: fields, widgets, constraints, masked values", params=pid,
                           statuses=(404,)),
            },
            "/api/plugins/{plugin_id}": {
                "get": _with_schema(_op("Plugin detail: this host's status and every host's (hosts), permissions, "
                                        "sessions, confinement, health, logs", params=pid, statuses=(404,)),
                                    "PluginDetail"),
                "delete": _op("Uninstall a plugin", role="admin", params=pid, statuses=(404, 409)),
            },
            "/api/plugins/{plugin_id}/enable": {"post": _op("Enable", role="admin", params=pid, statuses=(404, 409))},
            "/api/plugins/{plugin_id}/disable": {"post": _op("Disable", role="admin", params=pid, statuses=(404,))},
            "/api/plugins/{plugin_id}/config": {
                "get": _op("Config (secrets masked) and schema", params=pid, statuses=(404,)),
                "put": _op("Replace config; masked secrets keep their value", role="admin", body=True,
                           params=pid, statuses=(404, 422)),
            },
            "/api/plugins/{plugin_id}/sessions": {
                "get": _op("Active sessions", params=pid, statuses=(404,)),
                "put": _op("Set active sessions: {activeSessions: [...]}", role="admin", body=True, params=pid,
                           statuses=(404, 422)),
            },
            "/api/plugins/{plugin_id}/sessions/{session}/config": {
                "get": _op("Per-session config (masked)", params=(*pid, "session"), statuses=(404,)),
                "put": _op("Set per-session config", role="admin", body=True, params=(*pid, "session"),
                           statuses=(404, 422)),
            },
            "/api/events": {"get": {**_op("Live log lines and failures as server-sent events (?plugin=ID)",
                                          statuses=(404, 503)),
                                    "responses": {"200": {"description": "text/event-stream"},
                                                  "401": _ERROR, "404": _ERROR, "503": _ERROR}}},
            "/api/sessions": {"get": _op("Loopback sessions")},
            "/api/sessions/{session}/messages": {
                "post": _op("Inject an inbound message {chatId, body, sender?}; returns it and the replies sent",
                            body=True, params=("session",), statuses=(404, 422)),
            },
            "/api/sessions/{session}/start": {
                "post": _op("Start (connect) a loopback session; {pair?: true} shows a pairing QR code first "
                            "(session:qr)", params=("session",), statuses=(404, 422)),
            },
            "/api/sessions/{session}/error": {
                "post": _op("Put a loopback session in error {reason?} (session:error)", params=("session",),
                            statuses=(404, 422)),
            },
            "/api/sessions/{session}/messages/{message}/ack": {
                "post": _op("A delivery receipt for a sent message {status?: delivered|read} (message:ack)",
                            params=("session", "message"), statuses=(404, 422)),
            },
            "/api/sessions/{session}/messages/{message}": {
                "delete": _op("Delete a message from its chat (message:deleted)", params=("session", "message"),
                              statuses=(404, 422)),
            },
            "/api/sent": {"get": _op("Messages the loopback engine sent (?session=&limit=)")},
            "/api/webhooks": {
                "get": _op("Outbound webhook subscriptions (secrets never shown)", role="admin"),
                "post": _op("Create a subscription {url, events, secret?, enabled?, description?}; the answer "
                            "shows the secret once", role="admin", body=True, statuses=(422,)),
            },
            "/api/webhooks/deliveries": {
                "get": _op("Deliveries, newest first (?state=pending|delivered|dead&subscription=&limit=)",
                           role="admin"),
            },
            "/api/webhooks/dead-letters": {"get": _op("The dead-letter list (?limit=)", role="admin")},
            "/api/webhooks/deliveries/{delivery_id}": {
                "get": _op("One delivery", role="admin", params=("delivery_id",), statuses=(404,)),
            },
            "/api/webhooks/deliveries/{delivery_id}/replay": {
                "post": _op("Re-queue a dead-lettered delivery (same id)", role="admin", params=("delivery_id",),
                            statuses=(404, 409)),
            },
            "/api/webhooks/{webhook_id}": {
                "get": _op("One subscription", role="admin", params=("webhook_id",), statuses=(404,)),
                "patch": _op("Change url, events, secret, enabled or description", role="admin",
                             params=("webhook_id",), body=True, statuses=(404, 422)),
                "delete": _op("Delete a subscription and its deliveries", role="admin", params=("webhook_id",),
                              statuses=(404,)),
            },
            "/api/webhooks/{webhook_id}/deliveries": {
                "get": _op("Deliveries of one subscription (?limit=)", role="admin", params=("webhook_id",),
                           statuses=(404,)),
            },
            "/api/plugins/{plugin_id}/ingress/instances": {
                "get": _op("A plugin's ingress instances (secrets masked; each route's path on it)", params=pid,
                           statuses=(404,)),
                "post": _op("Create an ingress instance: {id?, sessionId?, secrets: {field: value}, description?}; "
                            "its routes verify with these secrets only", role="admin", params=pid, body=True,
                            statuses=(404, 409, 422)),
            },
            "/api/plugins/{plugin_id}/ingress/instances/{instance_id}": {
                "get": _op("One ingress instance (secrets masked)", params=(*pid, "instance_id"), statuses=(404,)),
                "patch": _op("Change an ingress instance: {sessionId?, secrets?: {field: value | \"********\" (keep) "
                             "| null (remove)}, description?}; a rotated secret applies to the next request",
                             role="admin", params=(*pid, "instance_id"), body=True, statuses=(404, 422)),
                "delete": _op("Delete an ingress instance: its paths answer 404 from then on", role="admin",
                              params=(*pid, "instance_id"), statuses=(404,)),
            },
            "/api/plugins/{plugin_id}/ingress/deliveries": {
                "get": _op("A plugin's async ingress deliveries, newest first (?state=pending|delivered|dead&limit=)",
                           role="admin", params=pid, statuses=(404,)),
            },
            "/api/plugins/{plugin_id}/ingress/dead-letters": {
                "get": _op("A plugin's dead-lettered ingress deliveries (?limit=)", role="admin", params=pid,
                           statuses=(404,)),
            },
            "/api/plugins/{plugin_id}/ingress/deliveries/{delivery_id}": {
                "get": _op("One ingress delivery", role="admin", params=(*pid, "delivery_id"), statuses=(404,)),
            },
            "/api/plugins/{plugin_id}/ingress/deliveries/{delivery_id}/replay": {
                "post": _op("Re-queue a dead-lettered ingress delivery (same id)", role="admin",
                            params=(*pid, "delivery_id"), statuses=(404, 409)),
            },
            "/api/ingress/{plugin_id}/{instance_id}/{route}": {
                "get": _op("The route's challenge handshake (answers the echo parameter when the token matches)",
                           role=None, params=(*pid, "instance_id", "route"), statuses=(400, 403, 404, 405, 503)),
                "post": _op("Signed webhook into a plugin instance (no API key; signature per manifest); an async "
                            "route answers 202 {id, status} at once", role=None,
                            params=(*pid, "instance_id", "route"),
                            statuses=(400, 401, 404, 409, 413, 429, 500, 502, 503, 504)),
            },
            "/ingress/{plugin_id}/{route}": {
                "post": _op("The first release's ingress path: instance `default`", role=None,
                            params=(*pid, "route"), statuses=(400, 401, 404, 409, 413, 429, 500, 502, 503, 504)),
            },
        },
    }
