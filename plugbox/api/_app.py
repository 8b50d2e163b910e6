"""`create_app(host)`: the Starlette app — routes, error handling, keys, metrics and replay guard,
all held in `app.state`; the metrics are registered as one of the host's observers. Building the app
starts nothing; the host's lifecycle belongs to the caller (`plugbox serve` passes a lifespan that
boots and stops it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from plugbox.api._errors import CatchAll, exception_handlers
from plugbox.api.auth import KeyRing
from plugbox.api.ingress import ReplayGuard
from plugbox.api.metrics import Metrics
from plugbox.api.routes import (
    catalog,
    cloudapi,
    docs,
    events,
    ingress,
    ingress_instances,
    ingress_queue,
    plugins,
    sessions,
    system,
    webhooks,
)
from plugbox.engines.cloudapi import CloudApiEngine
from plugbox.host import Host

__all__ = ["create_app"]

Lifespan = Callable[[Starlette], AbstractAsyncContextManager[Any]]


def create_app(
    host: Host,
    *,
    extra_admin_keys: Iterable[str] = (),
    lifespan: Lifespan | None = None,
) -> Starlette:
    """The API app for `host`. Keys come from `host.settings` (`api_keys`, `admin_api_keys`) plus
    `extra_admin_keys` (the key `plugbox serve` generates when none is configured)."""
    engine_routes = cloudapi.routes if isinstance(host.engine, CloudApiEngine) else []
    app = Starlette(
        routes=[*system.routes, *docs.routes, *plugins.routes, *catalog.routes, *events.routes, *sessions.routes,
                *ingress.routes, *ingress_instances.routes, *ingress_queue.routes, *webhooks.routes, *engine_routes],
        middleware=[Middleware(CatchAll)],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    settings = host.settings
    metrics = Metrics(host)
    host.add_observer(metrics)  # also times every hook chain from now on
    app.state.host = host
    app.state.keys = KeyRing(settings.api_keys, (*settings.admin_api_keys, *extra_admin_keys))
    app.state.metrics = metrics
    app.state.replay = ReplayGuard(settings.ingress_dedup_max_entries)
    return app
