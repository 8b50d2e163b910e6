"""The management routes over HTTP against a real host and real workers: a plugin's health, its
config form, search over HTTP (a stuck provider is charged), the catalog, and install from a URL
through the net.fetch guard (address check, size cap, sha256 pin, no redirects)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugbox.api import create_app
from plugbox.host import Host
from tests.integration.conftest import WritePlugin, enable, wait_for

pytestmark = pytest.mark.timeout(90)

ADMIN = {"X-API-Key": "admin-key"}
READER = {"X-API-Key": "reader-key"}
EXAMPLES = Path(__file__).parents[2] / "examples" / "plugins"


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {"api_keys": ("reader-key",), "admin_api_keys": ("admin-key",),
            "plugins_dir": str(tmp_path / "plugins"), "install_zip_max_bytes": 64 * 1024}


@pytest.fixture
async def client(host: Host) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(host)), base_url="http://t") as c:
        yield c


# -- health ------------------------------------------------------------------------------------------

HEALTH = """
from plugbox.sdk import Plugin

class P(Plugin):
    def health_check(self):
        return {"healthy": self.ctx.config.get("ok", True), "message": "queue depth 3"}
"""
OK_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean", "default": True}}}


async def test_health_route_runs_health_check_and_answers_503_when_unhealthy(
    client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin
) -> None:
    await enable(host, write_plugin(HEALTH, configSchema=OK_SCHEMA))
    r = await client.get("/api/plugins/p/health", headers=READER)
    assert r.status_code == 200
    assert r.json() == {"id": "p", "status": "enabled", "healthy": True, "message": "queue depth 3"}

    await host.set_config("p", {"ok": False})
    r = await client.get("/api/plugins/p/health", headers=READER)
    assert (r.status_code, r.json()["healthy"]) == (503, False)


async def test_health_of_a_plugin_not_running_is_503_saying_its_status(
    client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin
) -> None:
    host.load_plugin(write_plugin(HEALTH))
    r = await client.get("/api/plugins/p/health", headers=READER)
    assert r.status_code == 503
    assert r.json()["message"] == "plugin is installed"
    assert (await client.get("/api/plugins/nobody/health", headers=READER)).status_code == 404


# -- config-ui ---------------------------------------------------------------------------------------

FORM_SCHEMA = {"type": "object", "required": ["baseUrl"], "properties": {
    "baseUrl": {"type": "string", "title": "Helpdesk URL", "pattern": "^https://.*"},
    "apiToken": {"type": "string", "secret": True},
    "mode": {"type": "string", "enum": ["quiet", "loud"], "default": "quiet"},
    "signature": {"type": "textarea"},
    "timeoutMs": {"type": "number", "default": 3000, "min": 500, "max": 10000},
    "tags": {"type": "array", "items": {"type": "string"}},
    "retry": {"type": "object", "properties": {"enabled": {"type": "boolean", "default": False}}}}}


async def test_config_ui_describes_every_field_with_its_widget_and_masked_value(
    client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin
) -> None:
    host.load_plugin(write_plugin("from plugbox.sdk import Plugin\nclass P(Plugin): pass\n",
                                  configSchema=FORM_SCHEMA))
    await host.set_config("p", {"baseUrl": "https://desk.example.com", "apiToken": "tok-123456"})

    r = await client.get("/api/plugins/p/config-ui", headers=READER)

    assert r.status_code == 200, r.text
    form = r.json()
    assert form["configurable"] is True
    fields = {f["path"]: f for f in form["fields"]}
    assert list(fields) == ["baseUrl", "apiToken", "mode", "signature", "timeoutMs", "tags", "retry"]
    assert {p: f["widget"] for p, f in fields.items()} == {
        "baseUrl": "text", "apiToken": "password", "mode": "select", "signature": "textarea",
        "timeoutMs": "number", "tags": "list", "retry": "group"}
    assert (fields["baseUrl"]["title"], fields["baseUrl"]["required"]) == ("Helpdesk URL", True)
    assert fields["baseUrl"]["value"] == "https://desk.example.com"
    assert fields["apiToken"]["value"] == "********" and "tok-123456" not in r.text
    assert (fields["timeoutMs"]["title"], fields["timeoutMs"]["min"], fields["timeoutMs"]["max"]) == (
        "Timeout ms", 500, 10000)
    assert fields["mode"]["enum"] == ["quiet", "loud"]
    assert fields["tags"]["items"] == {"type": "string", "widget": "text"}
    assert [(f["path"], f["widget"]) for f in fields["retry"]["fields"]] == [("retry.enabled", "checkbox")]


async def test_config_ui_of_a_plugin_without_schema_is_not_configurable(
    client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin
) -> None:
    host.load_plugin(write_plugin("from plugbox.sdk import Plugin\nclass P(Plugin): pass\n"))
    assert (await client.get("/api/plugins/p/config-ui", headers=READER)).json() == {
        "id": "p", "configurable": False, "fields": []}


# -- search ------------------------------------------------------------------------------------------

SEARCHER = """
from plugbox.sdk import Plugin

class Searcher(Plugin):
    async def on_load(self, ctx):
        ctx.register_search_provider(self.search)

    async def search(self, query):
        if self.ctx.config.get("stuck"):
            while True:  # a provider stuck in a loop: only the liveness ping can end it
                pass
        return [{"title": "hit for " + query["q"]}]
"""
STUCK_SCHEMA = {"type": "object", "properties": {"stuck": {"type": "boolean", "default": False}}}


async def test_search_over_http_answers_per_plugin(
    client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin
) -> None:
    await enable(host, write_plugin(SEARCHER, id="docs", permissions=["search:provide"]))
    r = await client.post("/api/search", json={"query": {"q": "invoice"}}, headers=READER)
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [{"plugin": "docs", "ok": True, "results": [{"title": "hit for invoice"}]}]}
    for bad in ({"query": "x"}, {"query": {}, "timeoutMs": 0}, {"query": {}, "plugin": 3}):
        assert (await client.post("/api/search", json=bad, headers=READER)).status_code == 400, bad


async def test_a_search_provider_stuck_in_a_loop_is_pinged_and_charged(
    client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin
) -> None:
    await enable(host, write_plugin(SEARCHER, id="good", permissions=["search:provide"]))
    entry = await enable(host, write_plugin(SEARCHER, id="stuck", permissions=["search:provide"],
                                            configSchema=STUCK_SCHEMA))
    await host.set_config("stuck", {"stuck": True})
    pid = entry.runtime.pid  # type: ignore[union-attr]

    r = await client.post("/api/search", json={"query": {"q": "x"}, "timeoutMs": 500}, headers=READER)

    good, stuck = r.json()["results"]
    assert good["ok"] is True
    assert stuck["ok"] is False and "within 0.5 s" in stuck["error"]
    detail = (await client.get("/api/plugins/stuck", headers=READER)).json()
    assert detail["failures"].get("hook_timeout") == 1  # charged to the stuck plugin
    assert "hook_timeout" not in (await client.get("/api/plugins/good", headers=READER)).json()["failures"]
    # the liveness ping goes unanswered: that worker is killed (and restarted), the host goes on
    await wait_for(lambda: host.manager.get("stuck").runtime is None
                   or host.manager.get("stuck").runtime.pid != pid)  # type: ignore[union-attr]
    assert (await client.get("/health")).status_code == 200


# -- catalog -----------------------------------------------------------------------------------------


@pytest.fixture
def catalog(tmp_path: Path, settings_overrides: dict[str, Any]) -> Path:
    root = tmp_path / "catalog"
    settings_overrides["catalog_dir"] = str(root)
    good = root / "greeter"
    good.mkdir(parents=True)
    (good / "manifest.json").write_text(json.dumps({
        "id": "greeter", "name": "Greeter", "version": "1.2.0", "type": "extension", "main": "main.py",
        "description": "says hello", "permissions": ["messages:send"]}))
    (good / "main.py").write_text("from plugbox.sdk import Plugin\nclass G(Plugin): pass\n")
    (good / "tests").mkdir()
    (good / "tests" / "test_g.py").write_text("")  # packed out, like `plugbox pack`
    broken = root / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"id": "broken"}')
    return root


@pytest.mark.usefixtures("catalog")
async def test_catalog_lists_what_can_be_installed_and_installs_it(client: httpx.AsyncClient, host: Host) -> None:
    r = await client.get("/api/catalog", headers=READER)
    entries = {e["id"]: e for e in r.json()["plugins"]}
    assert entries["greeter"] == {"id": "greeter", "name": "Greeter", "version": "1.2.0", "description": "says hello",
                                  "permissions": ["messages:send"], "minHostVersion": None,
                                  "installable": True, "installed": None}
    assert entries["broken"]["installable"] is False and "'name'" in entries["broken"]["error"]

    assert (await client.post("/api/catalog/greeter/install", headers=READER)).status_code == 403
    r = await client.post("/api/catalog/greeter/install", headers=ADMIN)
    assert r.status_code == 201, r.text
    assert (r.json()["id"], r.json()["status"]) == ("greeter", "installed")
    assert sorted(p.name for p in (host.settings.plugins_path / "greeter").iterdir()) == ["main.py", "manifest.json"]
    listed = {e["id"]: e for e in (await client.get("/api/catalog", headers=READER)).json()["plugins"]}
    assert listed["greeter"]["installed"] == "1.2.0"
    assert (await client.post("/api/catalog/nothing/install", headers=ADMIN)).status_code == 404


async def test_the_default_catalog_is_the_shipped_examples(client: httpx.AsyncClient) -> None:
    ids = {e["id"] for e in (await client.get("/api/catalog", headers=READER)).json()["plugins"]}
    assert {p.name for p in EXAMPLES.iterdir() if (p / "manifest.json").is_file()} <= ids
    assert "echo" in ids


# -- install from URL --------------------------------------------------------------------------------


def _zip(plugin_id: str = "fetched") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"id": plugin_id, "name": plugin_id, "version": "1.0.0",
                                                 "type": "extension", "main": "main.py"}))
        zf.writestr("main.py", "from plugbox.sdk import Plugin\nclass P(Plugin): pass\n")
    return buf.getvalue()


class Archives:
    """A local HTTP server: path -> (status line, body, extra headers); counts connections."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes, str]] = {}
        self.connections = 0
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            path = head.split(" ", 2)[1]
            status, body, extra = self.routes.get(path, ("404 Not Found", b"", ""))
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/zip\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n{extra}\r\n".encode() + body)
            await writer.drain()
        finally:
            writer.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def archives() -> AsyncIterator[Archives]:
    served = Archives()
    server = await asyncio.start_server(served.serve, "127.0.0.1", 0)
    served.port = server.sockets[0].getsockname()[1]
    try:
        yield served
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def exempt(settings_overrides: dict[str, Any]) -> None:
    settings_overrides["fetch_exempt_hosts"] = ("127.0.0.1",)  # the local archive server stands for a public one


async def _install(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/api/plugins", json=body, headers=ADMIN)


@pytest.mark.usefixtures("exempt")
async def test_install_from_url_with_a_matching_pin(client: httpx.AsyncClient, host: Host, archives: Archives) -> None:
    data = _zip()
    archives.routes["/p.zip"] = ("200 OK", data, "")
    r = await _install(client, {"url": archives.url("/p.zip"), "sha256": hashlib.sha256(data).hexdigest().upper()})
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "fetched" and host.plugin("fetched").status == "installed"


@pytest.mark.usefixtures("exempt")
async def test_install_from_url_refuses_a_pin_mismatch_and_installs_nothing(
    client: httpx.AsyncClient, host: Host, archives: Archives
) -> None:
    archives.routes["/p.zip"] = ("200 OK", _zip(), "")
    r = await _install(client, {"url": archives.url("/p.zip"), "sha256": "0" * 64})
    assert r.status_code == 400
    assert "sha256" in r.json()["error"] and "0" * 64 in r.json()["error"]
    assert [v.plugin_id for v in host.plugins()] == []


@pytest.mark.usefixtures("exempt")
@pytest.mark.parametrize(("path", "status", "body", "extra", "expected"), [
    ("/big.zip", "200 OK", b"x" * (64 * 1024 + 1), "", "larger than the 65536-byte cap"),
    ("/gone.zip", "404 Not Found", b"", "", "answered 404"),
    ("/moved.zip", "302 Found", b"", "Location: http://127.0.0.1/p.zip\r\n", "answered 302"),
])
async def test_install_from_url_names_what_the_server_did_wrong(
    client: httpx.AsyncClient, host: Host, archives: Archives, path: str, status: str, body: bytes, extra: str,
    expected: str,
) -> None:
    archives.routes[path] = (status, body, extra)
    r = await _install(client, {"url": archives.url(path)})
    assert r.status_code == 502
    assert expected in r.json()["error"] and r.json()["error"].startswith("install from URL: ")
    assert host.plugins() == []


async def test_install_from_url_goes_through_the_ssrf_guard(
    client: httpx.AsyncClient, host: Host, archives: Archives
) -> None:
    archives.routes["/p.zip"] = ("200 OK", _zip(), "")
    for url in (archives.url("/p.zip"), f"http://localhost:{archives.port}/p.zip",  # a name for a private address
                "http://169.254.169.254/latest/meta-data", "http://[::ffff:127.0.0.1]/x", "http://2130706433/x"):
        r = await _install(client, {"url": url})
        assert r.status_code == 400, url
        assert "is not public" in r.json()["error"]
    assert archives.connections == 0  # refused before connecting
    for url in ("file:///etc/passwd", "ftp://example.com/p.zip"):
        assert (await _install(client, {"url": url})).status_code == 400, url
    assert host.plugins() == []


async def test_install_from_url_validates_the_request(client: httpx.AsyncClient) -> None:
    for body in ({}, {"url": ""}, {"url": 3}, {"url": "https://example.com/p.zip", "sha256": "abc"}):
        r = await _install(client, body)
        assert r.status_code == 400, body
    r = await client.post("/api/plugins", json={"url": "https://example.com/p.zip"}, headers=READER)
    assert r.status_code == 403


# -- OpenWA manifests --------------------------------------------------------------------------------


async def test_an_openwa_manifest_loads_with_its_fields_reported(
    client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin
) -> None:
    await enable(host, write_plugin(
        "from plugbox.sdk import Plugin\nclass P(Plugin): pass\n", minOpenWAVersion="0.8.0",
        testedOpenWAVersion="0.9.1", hooks=["message:received", "message:annotation-created"],
        configUi={"entry": "config/index.html"}, provides=["x"], author="someone"))

    detail = (await client.get("/api/plugins/p", headers=READER)).json()

    assert detail["status"] == "enabled"
    assert detail["openwa"] == {"minOpenWAVersion": "0.8.0", "testedOpenWAVersion": "0.9.1"}
    assert detail["warnings"][0] == ("hooks[1]: OpenWA event 'message:annotation-created' is not supported "
                                     "here; the plugin will not receive it")
    assert detail["warnings"][1].startswith("configUi: ")


# -- an update keeps the log history -----------------------------------------------------------------

LOGGING = """
from plugbox.sdk import Plugin

class P(Plugin):
    async def on_enable(self, ctx):
        ctx.logger.info("hello from VERSION")
"""


def _versioned(version: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"id": "chatty", "name": "chatty", "version": version,
                                                 "type": "extension", "main": "main.py"}))
        zf.writestr("main.py", LOGGING.replace("VERSION", version))
    return buf.getvalue()


async def test_a_plugins_log_history_survives_an_upgrade(client: httpx.AsyncClient) -> None:
    async def upload(version: str) -> httpx.Response:
        return await client.post("/api/plugins", files={"file": ("p.zip", _versioned(version), "application/zip")},
                                 headers=ADMIN)

    assert (await upload("1.0.0")).status_code == 201
    assert (await client.post("/api/plugins/chatty/enable", headers=ADMIN)).json()["status"] == "enabled"
    r = await upload("2.0.0")
    assert r.status_code == 200 and r.json()["version"] == "2.0.0"

    messages = [line["message"] for line in (await client.get("/api/plugins/chatty", headers=READER)).json()["logs"]]
    assert messages.index("hello from 1.0.0") < messages.index("updated from version 1.0.0 to 2.0.0") < (
        messages.index("hello from 2.0.0"))


UNLOADS = """
from plugbox.sdk import Plugin

class P(Plugin):
    async def on_unload(self, ctx):
        await ctx.storage.set("unloads", await ctx.storage.get("unloads", 0) + 1)
"""


async def test_on_unload_runs_on_every_disable_as_authoring_md_says(
    client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin
) -> None:
    host.load_plugin(write_plugin(UNLOADS, permissions=["storage:use"]))
    for expected in (1, 2):
        assert (await client.post("/api/plugins/p/enable", headers=ADMIN)).json()["status"] == "enabled"
        assert (await client.post("/api/plugins/p/disable", headers=ADMIN)).json()["status"] == "disabled"
        assert host.storage.get("p", "unloads") == (True, expected)
