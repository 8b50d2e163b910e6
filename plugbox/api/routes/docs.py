"""`/` (a redirect to the dashboard) and `/docs`: the API reference, rendered in the browser from
`/openapi.json` by one self-written page in `plugbox/api/static/docs.html` (no CDN, no third-party
script). Its CSP allows only its own inline script and style, by hash, and fetches from this origin."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Route

__all__ = ["routes"]


@functools.cache
def _page() -> tuple[str, str]:
    """The page and its Content-Security-Policy (hashes of exactly its inline script and style)."""
    html = resources.files("plugbox.api").joinpath("static/docs.html").read_text("utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)

    csp = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
           "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
    return html, csp


async def api_docs(_request: Request) -> HTMLResponse:
    html, csp = _page()
    return HTMLResponse(html, headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
                                       "Referrer-Policy": "no-referrer"})


async def root(_request: Request) -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=307)


routes = [
    Route("/", root, methods=["GET"]),
    Route("/docs", api_docs, methods=["GET"]),
]
