"""`/api/plugins/{id}/ingress/instances…`: the ingress instances an operator creates for a plugin
(list, create, read, change, delete), each served at `/api/ingress/{plugin}/{instance}/{route}` and
verified with its own secrets. Reads need any API key and show every secret as `********`; create,
change (rotate a secret, rebind the session) and delete need an admin key. The secrets are the
operator's (a provider's webhook secret, pasted in), never generated or defaulted here, and no
answer ever carries one."""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from plugbox.api._body import read_json
from plugbox.api._errors import ApiError
from plugbox.api.auth import ADMIN, READ, require
from plugbox.errors import InstanceConflict
from plugbox.host import Host
from plugbox.ingress.instances import parse_spec, parse_update
from plugbox.lifecycle.view import PluginView

__all__ = ["routes"]

_BASE = "/api/plugins/{plugin_id}/ingress/instances"


def _plugin(request: Request, role: str) -> tuple[Host, PluginView]:
    require(request, role)
    host: Host = request.app.state.host
    return host, host.plugin(request.path_params["plugin_id"])  # an unknown plugin is a 404


def _unknown(view: PluginView, instance_id: str) -> ApiError:
    return ApiError(404, f"plugin {view.plugin_id!r} has no ingress instance {instance_id!r}")


async def list_instances(request: Request) -> JSONResponse:
    host, view = _plugin(request, READ)
    routes = view.manifest.ingress
    return JSONResponse({"instances": [i.public(routes) for i in host.ingress_instances.list(view.plugin_id)]})


async def create_instance(request: Request) -> JSONResponse:
    host, view = _plugin(request, ADMIN)
    manifest = view.manifest
    if not manifest.ingress:
        raise ApiError(409, f"plugin {view.plugin_id!r} declares no ingress routes")
    spec = parse_spec(await read_json(request), routes=manifest.ingress, sessions=manifest.sessions,
                      new_id=f"inst-{secrets.token_hex(6)}",
                      secret_max_chars=host.settings.ingress_instance_secret_max_chars)
    try:
        instance = await host.ingress_instances.create(view.plugin_id, spec)
    except InstanceConflict as exc:
        raise ApiError(409, str(exc), field="id") from None
    return JSONResponse(instance.public(manifest.ingress), status_code=201)


async def get_instance(request: Request) -> JSONResponse:
    host, view = _plugin(request, READ)
    instance_id = request.path_params["instance_id"]
    instance = host.ingress_instances.get(view.plugin_id, instance_id)
    if instance is None:
        raise _unknown(view, instance_id)
    return JSONResponse(instance.public(view.manifest.ingress))


async def update_instance(request: Request) -> JSONResponse:
    """A rotated secret applies to the next request: the old one verifies nothing from then on."""
    host, view = _plugin(request, ADMIN)
    instance_id = request.path_params["instance_id"]
    current = host.ingress_instances.get(view.plugin_id, instance_id)
    if current is None:
        raise _unknown(view, instance_id)
    spec = parse_update(await read_json(request), current, routes=view.manifest.ingress,
                        sessions=view.manifest.sessions,
                        secret_max_chars=host.settings.ingress_instance_secret_max_chars)
    updated = await host.ingress_instances.update(view.plugin_id, spec)
    if updated is None:  # deleted meanwhile (by another request, or another host)
        raise _unknown(view, instance_id)
    return JSONResponse(updated.public(view.manifest.ingress))


async def delete_instance(request: Request) -> Response:
    """From the answer on, the instance's paths answer 404. Deliveries it already queued (async
    routes) were verified when they arrived and are still delivered, with its `instanceId`."""
    host, view = _plugin(request, ADMIN)
    instance_id = request.path_params["instance_id"]
    if not await host.ingress_instances.delete(view.plugin_id, instance_id):
        raise _unknown(view, instance_id)
    return Response(status_code=204)


routes = [
    Route(_BASE, list_instances, methods=["GET"]),
    Route(_BASE, create_instance, methods=["POST"]),
    Route(_BASE + "/{instance_id}", get_instance, methods=["GET"]),
    Route(_BASE + "/{instance_id}", update_instance, methods=["PATCH"]),
    Route(_BASE + "/{instance_id}", delete_instance, methods=["DELETE"]),
]
