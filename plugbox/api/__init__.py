"""The operator HTTP API of a plugbox host (SPEC §9): JSON management API with API keys and an admin
role, signed ingress into plugins, Prometheus metrics, an OpenAPI document and a dashboard page.

    create_app(host) -> Starlette

The app does not start or stop the host unless asked to (`manage_host=True`, as `plugbox serve` does).
"""

from __future__ import annotations

from plugbox.api._app import create_app

__all__ = ["create_app"]
