"""End to end: a real `plugbox serve` process, its dashboard in headless Chromium (Debian's
/usr/bin/chromium driven by Playwright; Playwright's own browser download is never used).

The operator pastes an admin key into the page, sees the echo plugin's status, permissions and
confinement layers, enables and disables it with the row's button, edits its config through the form
generated from configSchema, and every change is checked against the JSON API as well as the page.
Another installs a plugin by uploading its zip, activates it on a session, sets per-session config,
follows its logs live, sees a permission denial (lastError, failures, metrics) within a second, sees
what it sent and a broken plugin directory, then uninstalls it. Another installs plugins whose name,
config schema, log lines and errors carry HTML and checks that the page shows them as text and runs
nothing. The last sends the dashboard's tab to a plugin's ingress route that answers with a
key-stealing script, and checks that nothing runs on the API origin. Screenshots go to the test's
tmp dir.

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
import zipfile
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
    from playwright.sync_api import Locator, Page, expect, sync_playwright
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


def newest_message(page: Page) -> Locator:
    """The text of the newest message (messages stack, newest first, until dismissed)."""
    return page.locator("#messages li .text").first


def open_dashboard(page: Page, url: str, client: httpx.Client) -> None:
    """Load the page and give it the admin key the way an operator does; the table lists every plugin
    (the ones in the plugins dir and the built-in auto-reply)."""
    plugin_count = len(api(client, "GET", "/api/plugins")["plugins"])
    page.goto(url + "/dashboard")
    expect(newest_message(page)).to_have_text("Enter an API key.")
    page.fill("#key", ADMIN_KEY)
    page.get_by_role("button", name="Use key").click()
    expect(newest_message(page)).to_have_text("key accepted")
    expect(page.locator("#plugin-count")).to_have_text(f"({plugin_count})")
    expect(page.locator("#plugins tbody tr")).to_have_count(plugin_count)
    expect(page.locator("#live")).to_have_text("live")  # the event stream is open


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
        expect(newest_message(page)).to_have_text("invalid API key")
        expect(page.locator("#messages li").first).to_have_class("error")
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
        expect(cells.nth(1)).to_have_text("enabledno session")  # flagged: it is active on no session yet
        expect(cells.nth(1).locator(".badge")).to_have_text("no session")
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
        expect(newest_message(page)).to_have_text("echo: config saved")
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

        # Messages stay until dismissed: the periodic refresh has not replaced them.
        expect(page.locator("#messages li .text")).to_contain_text(["echo: disabled", "echo: config saved",
                                                                   "echo: enabled"])
        page.get_by_role("button", name="Dismiss: echo: disabled").click()
        expect(newest_message(page)).to_have_text("echo: config saved")

        # The key lives in sessionStorage: a reload lists the plugins without asking again.
        page.reload()
        expect(page.locator("#plugin-count")).to_have_text(re.compile(r"^\(\d+\)$"))
        expect(cells.nth(1)).to_have_text("enabled")

        stop_cleanly(proc, log, spawned)
    assert dialogs == []
    assert errors == []


NOSY_CODE = """
from plugbox.sdk import Plugin

class Nosy(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook):
        self.ctx.logger.info("got " + hook.data["body"])
        await self.ctx.messages.send_text(hook.session_id, hook.data["chatId"],
                                          hook.config["greeting"] + " " + hook.data["body"])
        await self.ctx.storage.set("seen", hook.data["body"])  # not in its permissions: denied
"""


def _zip_plugin(path: Path, manifest: dict[str, Any], code: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("main.py", textwrap.dedent(code))
    return path


def metric(client: httpx.Client, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_dashboard_installs_activates_follows_logs_shows_failures_and_uninstalls(page: Page, tmp_path: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    nosy_zip = _zip_plugin(tmp_path / "nosy.zip", {
        "id": "nosy", "name": "Nosy", "version": "1.0.0", "type": "extension", "main": "main.py",
        "sdkVersion": "1", "permissions": ["messages:send"],
        "configSchema": {"type": "object", "properties": {"greeting": {"type": "string", "default": "hi"}}},
    }, NOSY_CODE)
    broken = tmp_path / "src" / "half-done"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text('{"id": "half-done", "name": "Half done"}')

    with serving(tmp_path, ADMIN_KEY, {"half-done": broken}) as (proc, url, log), \
            httpx.Client(base_url=url, headers=HEADERS, timeout=30) as c:
        assert f"plugbox: dashboard at {url}/dashboard" in log.read_text()  # printed at startup
        open_dashboard(page, url, c)
        # The directory that did not load is shown with the reason.
        expect(page.locator("#broken-list li")).to_have_count(1)
        expect(page.locator("#broken-list li")).to_contain_text("half-done: ")
        expect(page.locator("#broken-list li")).to_contain_text("version")

        # Install by upload: the detail opens on the new plugin.
        page.set_input_files("#install-file", str(nosy_zip))
        page.get_by_role("button", name="Install", exact=True).click()
        expect(newest_message(page)).to_have_text("installed nosy 1.0.0")
        expect(page.locator("#d-title")).to_have_text("Nosy (nosy 1.0.0)")
        assert api(c, "GET", "/api/plugins/nosy")["status"] == "installed"
        row = page.locator("#plugins tbody tr").filter(has_text="nosy 1.0.0")
        cells = row.locator("td")

        # Enabled on no session: flagged in the row and the detail.
        row.get_by_role("button", name="Enable").click()
        expect(cells.nth(1)).to_contain_text("enabled")
        expect(cells.nth(1).locator(".badge")).to_have_text("no session")
        expect(page.locator("#d-warnings li")).to_contain_text("enabled on no session")

        # Sessions: tick the engine's session; the flag goes away.
        session_box = page.locator("#d-sessions").get_by_role("checkbox", name="default")
        expect(session_box).not_to_be_checked()
        session_box.check()
        page.get_by_role("button", name="Save sessions").click()
        expect(newest_message(page)).to_have_text("nosy: active on default")
        assert api(c, "GET", "/api/plugins/nosy/sessions")["activeSessions"] == ["default"]
        expect(cells.nth(4)).to_have_text("default")
        expect(cells.nth(1).locator(".badge")).to_have_count(0)
        expect(page.locator("#d-warnings li")).to_have_count(0)

        # Per-session config: the form starts from the effective config; only the change is stored.
        greeting = page.locator("#d-session-config input[name=greeting]")
        expect(greeting).to_have_value("hi")
        greeting.fill("hello")
        page.get_by_role("button", name="Save session config").click()
        expect(newest_message(page)).to_have_text("nosy: config for session default saved")
        assert api(c, "GET", "/api/plugins/nosy/sessions/default/config")["config"] == {"greeting": "hello"}
        assert api(c, "GET", "/api/plugins/nosy/config")["config"] == {"greeting": "hi"}  # base untouched
        expect(page.locator("#d-session-config label")).to_contain_text("(set for this session)")
        expect(page.locator("#d-last-error")).to_have_text("No failures since the host loaded it.")

        # A message: the log line arrives live, the permission denial shows in lastError, the
        # failures, the metrics overview and the Prometheus counter within a second.
        reply = api(c, "POST", "/api/sessions/default/messages", json={"chatId": "15550001234@c.us", "body": "ping"})
        assert [m["body"] for m in reply["sent"]] == ["hello ping"]
        sent_at = time.monotonic()
        expect(page.locator("#d-logs")).to_contain_text("got ping", timeout=1000)
        # (the denial, then the handler error it raised in the plugin: both name the permission)
        expect(page.locator("#d-last-error")).to_contain_text("lacks permission 'storage:use'", timeout=1000)
        expect(page.locator("#d-failures li")).to_contain_text(["handler_error: ", "permission_denied: plugin 'nosy' "
                                                                "lacks permission 'storage:use'"], timeout=1000)
        expect(page.locator("#d-failure-counts")).to_have_text("By class: permission_denied 1, handler_error 1")
        denied_row = page.locator("#metrics tbody tr[data-plugin=nosy] td")
        expect(denied_row.nth(2)).to_have_text("1", timeout=1000)
        expect(cells.nth(5)).to_have_text("2last: handler_error", timeout=1000)  # failures in all, and the last class
        assert time.monotonic() - sent_at < 1.0 + 0.5  # the page's waits above, with Playwright's polling
        assert "storage:use" in api(c, "GET", "/api/plugins/nosy")["lastError"]["message"]
        assert metric(c, "plugbox_capability_denied_total", plugin="nosy", verb="storage.set") == 1.0

        # What it sent, newest first.
        expect(page.locator("#sent tbody tr").first).to_contain_text("hello ping")
        expect(page.locator("#sent tbody tr").first).to_contain_text("default")

        shot = tmp_path / "dashboard-v2.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 1000

        # Uninstall, confirmed inline (no browser dialog): gone from the page and the API.
        spawned = descendants(proc.pid)
        page.get_by_role("button", name="Uninstall").click()
        page.get_by_role("button", name="Confirm uninstall").click()
        expect(newest_message(page)).to_have_text("nosy: uninstalled")
        expect(page.locator("#detail")).to_be_hidden()
        expect(row).to_have_count(0)
        assert c.get("/api/plugins/nosy").status_code == 404

        # The page still has its event stream open: shutdown must not wait for it.
        expect(page.locator("#live")).to_have_text("live")
        stop_cleanly(proc, log, spawned)
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
    nothing (the CSP forbids inline handlers too, but the page must not lean on it)."""
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
        expect(hrow.locator("td").nth(1)).to_contain_text("enabled")
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
        expect(newest_message(page)).to_have_text("hostile: config saved")
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
