"""`/` and `/docs` on a real `plugbox serve`: the root redirects to the dashboard, startup prints
where it is, and the API reference renders every operation of /openapi.json in headless Chromium
under its strict CSP (no CDN, no script but its own, no CSP violation)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_dashboard import page  # noqa: F401  (the Chromium fixture)
from tests.serving import serving

pytestmark = pytest.mark.browser

ADMIN_KEY = "e2e-docs-admin-key"



def test_root_redirects_to_the_dashboard_and_startup_says_where(tmp_path: Path) -> None:
    with serving(tmp_path, ADMIN_KEY) as (_proc, url, log):
        r = httpx.get(url + "/", follow_redirects=False, timeout=10)
        assert r.status_code == 307
        assert r.headers["location"] == "/dashboard"
        assert httpx.get(url + "/", follow_redirects=True, timeout=10).url.path == "/dashboard"
        port = url.rsplit(":", 1)[1]
        assert f"dashboard at http://127.0.0.1:{port}/" in log.read_text()
        assert f"API reference at http://127.0.0.1:{port}/docs" in log.read_text()


def test_docs_render_every_operation_offline_under_a_strict_csp(tmp_path: Path, page: Page) -> None:  # noqa: F811
    with serving(tmp_path, ADMIN_KEY) as (_proc, url, _log):
        r = httpx.get(url + "/docs", timeout=10)
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "unsafe-inline" not in csp and "http" not in csp and "default-src 'none'" in csp
        assert "<script src" not in r.text and "https://" not in r.text
        doc = httpx.get(url + "/openapi.json", timeout=10).json()
        operations = sum(len(item) for item in doc["paths"].values())

        violations: list[str] = []
        page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
        requests: list[str] = []
        page.on("request", lambda req: requests.append(req.url))
        page.goto(url + "/docs")
        expect(page.locator("#ops details")).to_have_count(operations)
        expect(page.locator("#info")).to_contain_text(f"plugbox {doc['info']['version']}")
        delete = page.locator("#ops details", has_text="Uninstall a plugin")
        expect(delete.locator(".role")).to_have_text("admin")
        assert violations == []
        assert all(u.startswith(url) for u in requests), requests
