"""The operator dashboard: one static HTML page (`static/dashboard.html`) with plain `fetch` calls to
the JSON API; no build step, no third-party script. The page holds the API key in sessionStorage only
(and drops it when the API answers 401), renders plugin-supplied text with `textContent`, never as
HTML, and re-reads the plugin list every few seconds so that crashes and changes made through the API
show up. Tested end to end in tests/e2e/test_dashboard.py."""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["dashboard_html"]


@functools.cache
def dashboard_html() -> str:
    return resources.files("plugbox.api").joinpath("static/dashboard.html").read_text("utf-8")
