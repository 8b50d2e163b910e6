"""`/api/webhooks…`: outbound webhook subscriptions (create, list, read, update, delete), their
deliveries, the dead-letter list and replay. Every route needs an admin key: subscription URLs
often carry the receiver's token, and a secret is shown once, in the answer to its creation."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from plugbox.api._body import read_json
from plugbox.api._errors import ApiError
from plugbox.api.auth import ADMIN, require
from plugbox.host import Host
from plugbox.webhooks import WebhookService, parse_spec

__all__ = ["routes"]

LIST_DEFAULT_LIMIT = 100
LIST_MAX_LIMIT = 1000
_ID = "/api/webhooks/{webhook_id}"


def _service(request: Request) -> WebhookService:
    require(request, ADMIN)
    host: Host = request.app.state.host
    return host.webhooks


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", str(LIST_DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= LIST_MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {LIST_MAX_LIMIT}")
    return int(raw)


def _unknown(request: Request) -> ApiError:
    return ApiError(404, f"unknown webhook subscription {request.path_params['webhook_id']!r}")


async def list_webhooks(request: Request) -> JSONResponse:
    return JSONResponse({"webhooks": [s.public() for s in _service(request).subscriptions()]})


async def create_webhook(request: Request) -> JSONResponse:
    service = _service(request)
    sub = await service.create(parse_spec(await read_json(request)))
    return JSONResponse({**sub.public(), "secret": sub.secret}, status_code=201)


async def get_webhook(request: Request) -> JSONResponse:
    sub = _service(request).subscription(request.path_params["webhook_id"])
    if sub is None:
        raise _unknown(request)
    return JSONResponse(sub.public())


async def update_webhook(request: Request) -> JSONResponse:
    service = _service(request)
    sub = await service.update(request.path_params["webhook_id"], parse_spec(await read_json(request)))
    if sub is None:
        raise _unknown(request)
    return JSONResponse(sub.public())


async def delete_webhook(request: Request) -> Response:
    if not await _service(request).delete(request.path_params["webhook_id"]):
        raise _unknown(request)
    return Response(status_code=204)


async def list_deliveries(request: Request) -> JSONResponse:
    """`?state=pending|delivered|dead&subscription=ID&limit=N`, newest first."""
    service = _service(request)
    try:
        found = service.deliveries(subscription_id=request.query_params.get("subscription"),
                                   state=request.query_params.get("state"), limit=_limit(request))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return JSONResponse({"deliveries": [d.public() for d in found]})


async def webhook_deliveries(request: Request) -> JSONResponse:
    service = _service(request)
    if service.subscription(request.path_params["webhook_id"]) is None:
        raise _unknown(request)
    found = service.deliveries(subscription_id=request.path_params["webhook_id"], limit=_limit(request))
    return JSONResponse({"deliveries": [d.public() for d in found]})


async def dead_letters(request: Request) -> JSONResponse:
    found = _service(request).deliveries(state="dead", limit=_limit(request))
    return JSONResponse({"deliveries": [d.public() for d in found]})


async def get_delivery(request: Request) -> JSONResponse:
    delivery = _service(request).delivery(request.path_params["delivery_id"])
    if delivery is None:
        raise ApiError(404, f"unknown delivery {request.path_params['delivery_id']!r}")
    return JSONResponse(delivery.public())


async def replay_delivery(request: Request) -> JSONResponse:
    service = _service(request)
    delivery_id = request.path_params["delivery_id"]
    replayed = await service.replay(delivery_id)
    if replayed is None:
        if service.delivery(delivery_id) is None:
            raise ApiError(404, f"unknown delivery {delivery_id!r}")
        raise ApiError(409, f"delivery {delivery_id!r} is not in the dead-letter list")
    return JSONResponse(replayed.public(), status_code=202)


routes = [
    Route("/api/webhooks", list_webhooks, methods=["GET"]),
    Route("/api/webhooks", create_webhook, methods=["POST"]),
    # Before `_ID`: these fixed names must not be read as a subscription id.
    Route("/api/webhooks/deliveries", list_deliveries, methods=["GET"]),
    Route("/api/webhooks/dead-letters", dead_letters, methods=["GET"]),
    Route("/api/webhooks/deliveries/{delivery_id}", get_delivery, methods=["GET"]),
    Route("/api/webhooks/deliveries/{delivery_id}/replay", replay_delivery, methods=["POST"]),
    Route(_ID, get_webhook, methods=["GET"]),
    Route(_ID, update_webhook, methods=["PATCH"]),
    Route(_ID, delete_webhook, methods=["DELETE"]),
    Route(_ID + "/deliveries", webhook_deliveries, methods=["GET"]),
]
