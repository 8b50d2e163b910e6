"""End to end: a real `plugbox serve` process, its dashboard in headless Chromium (Debian's
/usr/bin/chromium driven by Playwright; Playwright's own browser download is never used).

The operator pastes an admin key into the page, sees the echo plugin's status, permissions and
confinement layers, enables and disables it with the row's button, edits its config through the form
generated from configSchema, and every change is checked against the JSON API as well as the page.
A second test installs plugins whose name, config schema, log lines and errors carry HTML and checks
that the page shows them as text and runs nothing. A third sends the dashboard's tab to a plugin's
ingress route that answers with a key-stealing script, and checks that nothing runs on the API origin.

No silent skip: without Chromium or Playwright these tests fail and say what to install (CI's
`.ci/run` installs Debian's `chromium`; `playwright` is in the `dev` extras). Set
PLUGBOX_TEST_CHROMIUM to use another Chromium binary.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import alive
from tests.serving import descendants, serving

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parents[2]
ECHO = ROOT / "examples" / "plugins" / "echo"
ADMIN_KEY = "e2e-dashboard-admin-key"
HEADERS = {"X-API-Key": ADMIN_KEY}
CHROMIUM = os.environ.get("PLUGBOX_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 15_000

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - a broken dev install, reported by the fixture below
    sync_playwright = None


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """A fresh headless Chromium (its own profile) with one page. Fails, never skips, when the
    browser is not there."""
    if sync_playwright is None:
        pytest.fail("the Python package 'playwright' is missing: pip install -e '.[dev]'")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it (Debian: apt-get install -y chromium) "
                    "or set PLUGBOX_TEST_CHROMIUM; `bash .ci/run` installs it")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            context.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def stop_cleanly(proc: subprocess.Popen[bytes], log: Path, spawned: set[int]) -> None:
    """SIGTERM → exit 0, and no worker or zygote the server ever had is left alive."""
    spawned |= descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in spawned) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in spawned if alive(pid)], "worker processes left behind"
    output = log.read_text()
    assert ADMIN_KEY not in output
    assert "Finished server process" in output


def open_dashboard(page: Page, url: str, client: httpx.Client) -> None:
    """Load the page and give it the admin key the way an operator does; the table lists every plugin
    (the ones in the plugins dir and the built-in auto-reply)."""
    plugin_count = len(api(client, "GET", "/api/plugins")["plugins"])
    page.goto(url + "/dashboard")
    expect(page.locator("#message")).to_have_text("Enter an API key.")
    page.fill("#key", ADMIN_KEY)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#message")).to_have_text(f"{plugin_count} plugin(s)")
    expect(page.locator("#plugins tbody tr")).to_have_count(plugin_count)


def api(client: httpx.Client, method: str, path: str, **kw: Any) -> Any:
    r = client.request(method, path, **kw)
    assert r.is_success, f"{method} {path}: {r.status_code} {r.text}"
    return r.json()


def test_dashboard_lists_toggles_and_configures_echo(page: Page, tmp_path: Path) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    with serving(tmp_path, ADMIN_KEY, {"echo": ECHO}) as (proc, url, log), \
            httpx.Client(base_url=url, headers=HEADERS, timeout=30) as c:
        spawned: set[int] = set()

        # A wrong key is refused, and the page says so.
        page.goto(url + "/dashboard")
        page.fill("#key", "not-the-key")
        page.get_by_role("button", name="Use key").click()
        expect(page.locator("#message")).to_have_text("invalid API key")
        expect(page.locator("#message")).to_have_class("error")
        expect(page.locator("#plugins tbody tr")).to_have_count(0)
        assert page.evaluate("sessionStorage.getItem('plugbox-key')") is None  # a refused key is not kept

        open_dashboard(page, url, c)
        row = page.locator("#plugins tbody tr").filter(has_text="Echo bot")
        cells = row.locator("td")
        expect(cells.nth(0)).to_contain_text("echo 1.0.0")
        expect(cells.nth(1)).to_have_text("installed")
        expect(cells.nth(2)).to_have_text("sandboxed")
        expect(cells.nth(3)).to_have_text("messages:send, storage:use")
        assert api(c, "GET", "/api/plugins/echo")["status"] == "installed"

        # Enable from the row: the page and the API agree.
        row.get_by_role("button", name="Enable").click()
        expect(cells.nth(1)).to_have_text("enabled")
        expect(cells.nth(1)).to_have_class("enabled")
        expect(row.get_by_role("button", name="Disable")).to_be_visible()
        assert api(c, "GET", "/api/plugins/echo")["status"] == "enabled"
        spawned |= descendants(proc.pid)
        assert spawned, "expected a zygote and a worker under the server"

        # Detail: status, health, the confinement layers the worker reported.
        row.get_by_role("link", name="Echo bot").click()
        detail = page.locator("#detail")
        expect(detail).to_be_visible()
        expect(page.locator("#d-title")).to_have_text("Echo bot (echo 1.0.0)")
        expect(page.locator("#d-status")).to_have_text("enabled")
        expect(page.locator("#d-health")).to_have_text("health: healthy - ok")
        expect(page.locator("#d-layers-note")).to_have_text("")
        layers = api(c, "GET", "/api/plugins/echo")["confinement"]
        assert layers, "an enabled sandboxed plugin reports its confinement layers"
        items = page.locator("#d-layers li")
        expect(items).to_have_count(len(layers))
        for i, layer in enumerate(layers):
            item = items.nth(i)
            expect(item).to_contain_text(layer["name"])
            if layer["applied"]:
                expect(item).to_have_text(f"applied {layer['name']} - {layer['detail']}")
                expect(item).to_have_class("enabled")
            elif layer.get("skipped"):  # not asked for by the policy (netns by default): not "MISSING"
                expect(item).to_have_text(f"off {layer['name']} - {layer['detail']}")
                expect(item).to_have_class("muted")
            else:
                expect(item).to_have_text(f"MISSING {layer['name']} - {layer['detail']}")
                expect(item).to_have_class("error")
        assert {"seccomp", "landlock"} <= {layer["name"] for layer in layers if layer["applied"]}

        # Config form generated from configSchema: the default shows, a new prefix saves.
        prefix = page.locator("#d-config input[name=prefix]")
        expect(prefix).to_be_visible()
        expect(prefix).to_have_value("echo: ")  # the schema default, as the API reports it
        assert api(c, "GET", "/api/plugins/echo/config")["config"] == {"prefix": "echo: "}
        prefix.fill(">> ")
        page.get_by_role("button", name="Save config").click()
        expect(page.locator("#message")).to_have_text("echo: config saved")
        assert api(c, "GET", "/api/plugins/echo/config")["config"]["prefix"] == ">> "
        expect(page.locator("#d-config input[name=prefix]")).to_have_value(">> ")
        # ...and the running worker uses it.
        api(c, "PUT", "/api/plugins/echo/sessions", json={"activeSessions": ["default"]})
        api(c, "POST", "/api/sessions/default/messages", json={"chatId": "15550001234@c.us", "body": "ping"})
        assert [m["body"] for m in api(c, "GET", "/api/sent")["sent"]] == [">> ping"]
        row.get_by_role("link", name="Echo bot").click()  # re-open the detail: the log line shows
        expect(page.locator("#d-logs")).to_contain_text("echoed")
        expect(cells.nth(4)).to_have_text("default")  # set through the API: the periodic refresh shows it

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 1000

        # Disable from the row: back to disabled, in the row, the open detail and the API.
        row.get_by_role("button", name="Disable").click()
        expect(cells.nth(1)).to_have_text("disabled")
        expect(row.get_by_role("button", name="Enable")).to_be_visible()
        expect(page.locator("#d-status")).to_have_text("disabled")
        expect(page.locator("#d-layers-note")).to_have_text("(from the last start; no worker running)")
        assert api(c, "GET", "/api/plugins/echo")["status"] == "disabled"

        # A change made elsewhere (here: the API) reaches the table by the page's periodic refresh.
        api(c, "POST", "/api/plugins/echo/enable")
        expect(cells.nth(1)).to_have_text("enabled")
        expect(row.get_by_role("button", name="Disable")).to_be_visible()

        # The key lives in sessionStorage: a reload lists the plugins without asking again.
        page.reload()
        expect(page.locator("#message")).to_have_text(re.compile(r"^\d+ plugin\(s\)$"))
        expect(cells.nth(1)).to_have_text("enabled")

        stop_cleanly(proc, log, spawned)
    assert dialogs == []
    assert errors == []


PAYLOAD = '<img src=x onerror="window.__pwned=1;alert(1)">'


def _write_plugin(root: Path, manifest: dict[str, Any], code: str) -> Path:
    root.mkdir(parents=True)
    doc = {"version": "1.0.0", "type": "extension", "main": "main.py", "sdkVersion": "1",
           "minHostVersion": "0.1.0", "permissions": [], **manifest}
    (root / "manifest.json").write_text(json.dumps(doc))
    (root / "main.py").write_text(textwrap.dedent(code))
    return root


def test_dashboard_renders_plugin_supplied_html_as_text(page: Page, tmp_path: Path) -> None:
    """Plugin-controlled strings (name, config titles, descriptions and enum values, log lines, the
    enable error) carry markup with an onerror handler; the page must show them literally and run
    nothing (the page's CSP allows inline handlers, so escaping is what stands in the way)."""
    src = tmp_path / "src"
    hostile = _write_plugin(src / "hostile", {
        "id": "hostile", "name": "Hostile " + PAYLOAD, "description": PAYLOAD,
        "configSchema": {"type": "object", "properties": {
            "mode": {"type": "string", "title": "Mode " + PAYLOAD, "description": PAYLOAD,
                     "enum": ["plain", PAYLOAD]}}},
    }, f"""
        from plugbox.sdk import Plugin

        class Hostile(Plugin):
            async def on_load(self, ctx):
                ctx.logger.info({PAYLOAD!r})
        """)
    broken = _write_plugin(src / "broken", {"id": "broken", "name": "Broken"}, f"""
        from plugbox.sdk import Plugin

        class Broken(Plugin):
            async def on_enable(self, ctx):
                raise RuntimeError({PAYLOAD!r})
        """)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    with serving(tmp_path, ADMIN_KEY, {"hostile": hostile, "broken": broken}) as (proc, url, log), \
            httpx.Client(base_url=url, headers=HEADERS, timeout=30) as c:
        open_dashboard(page, url, c)
        rows = page.locator("#plugins tbody tr")
        hrow = rows.filter(has_text="hostile 1.0.0")
        brow = rows.filter(has_text="broken 1.0.0")
        expect(hrow.get_by_role("link")).to_have_text("Hostile " + PAYLOAD)

        # The hostile plugin runs and logs markup; its detail shows the log and the schema texts.
        hrow.get_by_role("button", name="Enable").click()
        expect(hrow.locator("td").nth(1)).to_have_text("enabled")
        hrow.get_by_role("link").click()
        expect(page.locator("#d-title")).to_have_text(f"Hostile {PAYLOAD} (hostile 1.0.0)")
        expect(page.locator("#d-logs")).to_contain_text(PAYLOAD)
        label = page.locator("#d-config label").filter(has=page.locator("select[name=mode]"))
        expect(label).to_contain_text("Mode " + PAYLOAD)
        expect(label.locator("span")).to_have_text(" " + PAYLOAD)
        expect(label.locator("option")).to_have_text(["", "plain", PAYLOAD])
        # Choosing the markup value saves it as the string it is.
        page.select_option("#d-config select[name=mode]", label=PAYLOAD)
        page.get_by_role("button", name="Save config").click()
        expect(page.locator("#message")).to_have_text("hostile: config saved")
        assert api(c, "GET", "/api/plugins/hostile/config")["config"]["mode"] == PAYLOAD

        # The broken plugin's enable error carries markup: in the message bar, the row and the detail.
        brow.get_by_role("button", name="Enable").click()
        expect(brow.locator("td").nth(1)).to_contain_text("error")
        expect(brow.locator("td").nth(1)).to_contain_text(PAYLOAD)
        assert PAYLOAD in api(c, "GET", "/api/plugins/broken")["error"]
        brow.get_by_role("link", name="Broken").click()
        expect(page.locator("#d-status")).to_contain_text(PAYLOAD)
        expect(page.locator("#d-logs")).to_contain_text("enable failed")
        expect(page.locator("#d-logs")).to_contain_text(PAYLOAD)

        shot = tmp_path / "dashboard-hostile.png"
        page.screenshot(path=str(shot), full_page=True)

        assert page.locator("img").count() == 0, "plugin text was parsed as HTML"
        assert page.evaluate("window.__pwned") is None
        stop_cleanly(proc, log, set())
    assert dialogs == []


THIEF_SECRET = "e2e-webhook-secret"
THIEF_SIGNATURE = {"scheme": "hmac-sha256", "header": "X-Signature", "timestampHeader": "X-Timestamp",
                   "dedupHeader": "X-Delivery"}
STEAL = ("<script>window.__stolen = sessionStorage.getItem('plugbox-key'); document.title = 'pwned';"
         "fetch('/api/plugins', {headers: {'X-API-Key': window.__stolen}});"
         "new Image().src = '/ingress/thief/page?k=' + window.__stolen;</script>")


def test_plugin_ingress_page_cannot_read_the_admin_key(page: Page, tmp_path: Path) -> None:
    """Admin-key theft through ingress: the operator has the dashboard open (key in sessionStorage)
    and the same tab is sent to a plugin's ingress route, whose answer is an HTML page with a script
    that reads the key and sends it out. The answer is served as text in a sandbox (an opaque
    origin): nothing runs, the API origin's storage cannot be read, and no request leaves."""
    from plugbox.api.ingress import sign
    from plugbox.manifest import IngressSignature

    thief = _write_plugin(tmp_path / "src" / "thief", {
        "id": "thief", "name": "Thief", "permissions": ["webhook:ingress"],
        "configSchema": {"type": "object", "properties": {"webhookSecret": {"type": "string", "secret": True}}},
        "ingress": [{"route": "page", "signature": THIEF_SIGNATURE}],
    }, f"""
        from plugbox.sdk import Plugin

        class Thief(Plugin):
            async def on_load(self, ctx):
                ctx.register_webhook("page", self.page)

            async def page(self, request):
                return {{"status": 200, "body": "<!doctype html><title>ok</title>" + {STEAL!r},
                        "headers": {{"Content-Type": "text/html"}}}}
        """)
    requests: list[str] = []
    with serving(tmp_path, ADMIN_KEY, {"thief": thief}) as (proc, url, log), \
            httpx.Client(base_url=url, headers=HEADERS, timeout=30) as c:
        api(c, "PUT", "/api/plugins/thief/config", json={"webhookSecret": THIEF_SECRET})
        api(c, "POST", "/api/plugins/thief/enable")
        open_dashboard(page, url, c)
        assert page.evaluate("sessionStorage.getItem('plugbox-key')") == ADMIN_KEY

        def signed_post(route: Any) -> None:  # a sender that knows the secret, delivering into this tab
            stamp = str(int(time.time()))
            sig = IngressSignature(scheme="hmac-sha256", header="X-Signature", timestamp_header="X-Timestamp",
                                   dedup_header="X-Delivery", template="{id}.{timestamp}.{body}")
            route.continue_(method="POST", post_data=b"{}", headers={
                **route.request.headers, "X-Timestamp": stamp, "X-Delivery": "d-e2e",
                "X-Signature": sign(sig, THIEF_SECRET, b"{}", id="d-e2e", timestamp=stamp)})

        page.route(url + "/ingress/thief/page", signed_post)
        page.on("request", lambda r: requests.append(r.url))
        response = page.goto(url + "/ingress/thief/page")
        assert response is not None and response.status == 200  # the plugin answered its page
        page.wait_for_timeout(300)  # give an image or fetch the script might have started time to show
        assert page.title() != "pwned"
        assert page.evaluate("window.__stolen") is None  # the script never ran
        expect(page.locator("body")).to_contain_text("sessionStorage.getItem('plugbox-key')")  # shown as text
        assert page.evaluate("window.origin") == "null"  # a sandboxed, opaque origin
        read = page.evaluate("() => { try { return sessionStorage.getItem('plugbox-key') }"
                             " catch (e) { return 'refused: ' + e.name } }")
        assert read == "refused: SecurityError"  # even a script there could not read the key
        assert response.headers["content-type"].startswith("text/plain")
        assert "sandbox" in response.headers["content-security-policy"]
        assert requests == [url + "/ingress/thief/page"], requests
        stop_cleanly(proc, log, set())
