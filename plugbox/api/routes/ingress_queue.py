"""`/api/plugins/{id}/ingress/…`: a plugin's async ingress deliveries (pending, delivered, dead), the
dead-letter list and replay. Admin key only: a delivery holds what the sender posted. Everything is
per plugin, like the queue's bounds, so an operator reads one plugin's flood without wading through
another's."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from plugbox.api._errors import ApiError
from plugbox.api.auth import ADMIN, require
from plugbox.host import Host
from plugbox.ingress.queue import public

__all__ = ["routes"]

LIST_DEFAULT_LIMIT = 100
LIST_MAX_LIMIT = 1000
_BASE = "/api/plugins/{plugin_id}/ingress"


def _plugin(request: Request) -> tuple[Host, str]:
    require(request, ADMIN)
    host: Host = request.app.state.host
    plugin_id: str = request.path_params["plugin_id"]
    host.plugin(plugin_id)  # an unknown plugin is a 404
    return host, plugin_id


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", str(LIST_DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= LIST_MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {LIST_MAX_LIMIT}")
    return int(raw)


async def list_deliveries(request: Request) -> JSONResponse:
    """`?state=pending|delivered|dead&limit=N`, newest first."""
    host, plugin_id = _plugin(request)
    try:
        found = host.ingress.deliveries(plugin_id, state=request.query_params.get("state"), limit=_limit(request))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return JSONResponse({"deliveries": [public(d) for d in found]})


async def dead_letters(request: Request) -> JSONResponse:
    host, plugin_id = _plugin(request)
    return JSONResponse({"deliveries": [public(d) for d in host.ingress.deliveries(plugin_id, state="dead",
                                                                                  limit=_limit(request))]})


async def get_delivery(request: Request) -> JSONResponse:
    host, plugin_id = _plugin(request)
    delivery = host.ingress.delivery(plugin_id, request.path_params["delivery_id"])
    if delivery is None:
        raise ApiError(404, f"unknown ingress delivery {request.path_params['delivery_id']!r}")
    return JSONResponse(public(delivery))


async def replay_delivery(request: Request) -> JSONResponse:
    host, plugin_id = _plugin(request)
    delivery_id = request.path_params["delivery_id"]
    replayed = await host.ingress.replay(plugin_id, delivery_id)
    if replayed is None:
        if host.ingress.delivery(plugin_id, delivery_id) is None:
            raise ApiError(404, f"unknown ingress delivery {delivery_id!r}")
        raise ApiError(409, f"ingress delivery {delivery_id!r} is not in the dead-letter list")
    return JSONResponse(public(replayed), status_code=202)


routes = [
    Route(_BASE + "/deliveries", list_deliveries, methods=["GET"]),
    Route(_BASE + "/dead-letters", dead_letters, methods=["GET"]),
    Route(_BASE + "/deliveries/{delivery_id}", get_delivery, methods=["GET"]),
    Route(_BASE + "/deliveries/{delivery_id}/replay", replay_delivery, methods=["POST"]),
]
