"""The operator dashboard: one static HTML page (`static/dashboard.html`) with plain `fetch` calls to
the JSON API; no build step, no third-party script. The page holds the API key in sessionStorage only
and renders plugin-supplied text with `textContent`, never as HTML."""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["dashboard_html"]


@functools.cache
def dashboard_html() -> str:
    return resources.files("plugbox.api").joinpath("static/dashboard.html").read_text("utf-8")
