"""The operator dashboard: a static page (`static/dashboard.html`) with its own scripts
(`dashboard.js`, its forms in `dashboard-forms.js`) and stylesheet (`dashboard.css`), served from
this origin with a CSP that allows nothing else: no inline script or style, no other origin, no
form posts, no framing. The script talks to the JSON API with `fetch` and the key header, reads the
live event stream (`/api/events`), renders plugin-supplied text with `textContent`, never as HTML,
and holds the API key in sessionStorage only (dropped when the API answers 401). No build step, no
third-party code. Tested end to end in tests/e2e/test_dashboard.py."""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["ASSETS", "CSP", "dashboard_asset"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")

# URL name -> (file under static/, media type)
ASSETS = {
    "": ("dashboard.html", "text/html; charset=utf-8"),
    "app.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "forms.js": ("dashboard-forms.js", "text/javascript; charset=utf-8"),
    "app.css": ("dashboard.css", "text/css; charset=utf-8"),
}


@functools.cache
def dashboard_asset(name: str) -> tuple[str, str]:
    """(text, media type) of one of the dashboard's files; KeyError for any other name."""
    filename, media_type = ASSETS[name]
    return resources.files("plugbox.api").joinpath("static", filename).read_text("utf-8"), media_type
