"""The operator HTTP API against a real host with real confined workers (in-process ASGI client):
keys and roles, plugin management, zip install refusals that write nothing, config masking,
loopback injection, metrics and the OpenAPI document."""

from __future__ import annotations

import io
import json
import shutil
import stat
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugbox.api import create_app
from plugbox.errors import StorageError
from plugbox.host import Host
from tests.integration.conftest import SESSION, WritePlugin, enable

ADMIN = {"X-API-Key": "admin-key"}
READER = {"Authorization": "Bearer reader-key"}
ECHO = Path(__file__).parents[2] / "examples" / "plugins" / "echo"

SECRET_SCHEMA = {"type": "object", "properties": {
    "greeting": {"type": "string", "default": "hi"},
    "apiToken": {"type": "string", "secret": True},
    "timeoutMs": {"type": "number", "default": 3000, "min": 500}}}


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {"api_keys": ("reader-key",), "admin_api_keys": ("admin-key",),
            "plugins_dir": str(tmp_path / "plugins"), "install_max_files": 20,
            "install_zip_max_bytes": 64 * 1024, "install_unpacked_max_bytes": 256 * 1024}


@pytest.fixture
async def client(host: Host) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(host)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


def make_zip(files: dict[str, bytes | str], *, symlinks: dict[str, str] | None = None,
             modes: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = ((modes or {}).get(name, stat.S_IFREG | 0o644)) << 16
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def echo_zip(prefix: str = "") -> bytes:
    return make_zip({prefix + p.name: p.read_bytes() for p in ECHO.iterdir() if p.is_file()})


def plugins_dir_listing(host: Host) -> list[str]:
    root = host.settings.plugins_path
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


async def upload(client: httpx.AsyncClient, data: bytes, headers: dict[str, str] = ADMIN) -> httpx.Response:
    return await client.post("/api/plugins", files={"file": ("p.zip", data, "application/zip")}, headers=headers)


# -- keys and roles --

async def test_health_needs_no_key(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic admin-key"}])
async def test_missing_or_wrong_key_is_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for path in ("/api/plugins", "/metrics", "/api/sessions"):
        r = await client.get(path, headers=headers)
        assert r.status_code == 401, path
        assert "API key" in r.json()["error"]


async def test_reader_key_reads_but_cannot_manage(client: httpx.AsyncClient, host: Host,
                                                  write_plugin: WritePlugin) -> None:
    host.load_plugin(write_plugin("from plugbox.sdk import Plugin\nclass P(Plugin): pass\n"))
    assert (await client.get("/api/plugins", headers=READER)).status_code == 200
    for method, path in [("POST", "/api/plugins/p/enable"), ("POST", "/api/plugins/p/disable"),
                         ("DELETE", "/api/plugins/p"), ("PUT", "/api/plugins/p/config"),
                         ("PUT", "/api/plugins/p/sessions"), ("POST", "/api/plugins")]:
        r = await client.request(method, path, headers=READER, json={})
        assert r.status_code == 403, (method, path)
        assert r.json() == {"error": "this operation needs an admin API key"}
    assert host.manager.get("p").status == "installed"


# -- plugin management --

async def test_install_enable_inject_and_see_the_echo(client: httpx.AsyncClient, host: Host) -> None:
    r = await upload(client, echo_zip("echo/"))
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "echo" and r.json()["status"] == "installed"
    assert plugins_dir_listing(host) == ["echo"]
    r = await client.put("/api/plugins/echo/sessions", json={"activeSessions": [SESSION]}, headers=ADMIN)
    assert r.json()["activeSessions"] == [SESSION]
    r = await client.post("/api/plugins/echo/enable", headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "enabled", r.text
    r = await client.post(f"/api/sessions/{SESSION}/messages", json={"chatId": "15550001111@c.us", "body": "hello"},
                          headers=READER)
    assert r.status_code == 200, r.text
    assert [m["body"] for m in r.json()["sent"]] == ["echo: hello"]
    assert [m["body"] for m in (await client.get("/api/sent", headers=READER)).json()["sent"]] == ["echo: hello"]
    # every key of the API's JSON is camelCase, the sent log included
    for m in (await client.get("/api/sent", headers=READER)).json()["sent"] + r.json()["sent"]:
        assert m["sessionId"] == SESSION and "session_id" not in m
        assert not [k for k in m if "_" in k], m
    detail = (await client.get("/api/plugins/echo", headers=READER)).json()
    assert detail["health"]["healthy"] is True
    assert detail["permissions"] == ["messages:send", "storage:use"]
    assert detail["activeSessions"] == [SESSION]
    assert detail["confinement"] and all("name" in layer for layer in detail["confinement"])
    assert any("echoed" in line["message"] for line in detail["logs"])
    metrics = (await client.get("/metrics", headers=READER)).text
    assert 'plugbox_capability_calls_total{outcome="ok",plugin="echo",verb="messages.send_text"} 1.0' in metrics
    r = await client.post("/api/plugins/echo/disable", headers=ADMIN)
    assert r.json()["status"] == "disabled"
    r = await client.delete("/api/plugins/echo", headers=ADMIN)
    assert r.status_code == 200 and plugins_dir_listing(host) == []
    assert (await client.get("/api/plugins/echo", headers=READER)).status_code == 404


async def test_reinstall_replaces_the_running_plugin_and_keeps_it_enabled(client: httpx.AsyncClient,
                                                                          host: Host) -> None:
    assert (await upload(client, echo_zip())).status_code == 201
    await client.put("/api/plugins/echo/sessions", json={"activeSessions": [SESSION]}, headers=ADMIN)
    await client.post("/api/plugins/echo/enable", headers=ADMIN)
    files = {p.name: p.read_bytes() for p in ECHO.iterdir() if p.is_file()}
    files["main.py"] = files["main.py"].replace(b'prefix + message["body"]', b'"v2: " + message["body"]')
    r = await upload(client, make_zip(files))
    assert r.status_code == 200 and r.json()["status"] == "enabled", r.text
    r = await client.post(f"/api/sessions/{SESSION}/messages", json={"chatId": "15550001111@c.us", "body": "x"},
                          headers=ADMIN)
    assert [m["body"] for m in r.json()["sent"]] == ["v2: x"]
    assert plugins_dir_listing(host) == ["echo"]


async def test_reinstall_updates_a_plugin_whose_directory_is_not_named_after_its_id(
        client: httpx.AsyncClient, host: Host) -> None:
    placed = host.settings.plugins_path / "my-echo-checkout"
    shutil.copytree(ECHO, placed)
    host.load_plugin(placed)
    files = {p.name: p.read_bytes() for p in ECHO.iterdir() if p.is_file()}
    files["main.py"] = files["main.py"].replace(b'prefix + message["body"]', b'"v2: " + message["body"]')
    r = await upload(client, make_zip(files))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "installed"  # never enabled: an update does not make it `disabled`
    assert plugins_dir_listing(host) == ["my-echo-checkout"]
    assert b'"v2: "' in (placed / "main.py").read_bytes()


MANIFEST = json.dumps({"id": "z", "name": "z", "version": "1.0.0", "type": "extension", "main": "main.py"})
MAIN = "from plugbox.sdk import Plugin\nclass Z(Plugin): pass\n"


@pytest.mark.parametrize(("name", "archive", "message"), [
    ("path escape", lambda: make_zip({"manifest.json": MANIFEST, "main.py": MAIN, "../evil.py": "x"}), "'..'"),
    ("absolute", lambda: make_zip({"manifest.json": MANIFEST, "main.py": MAIN, "/etc/evil": "x"}), "absolute"),
    ("backslash", lambda: make_zip({"manifest.json": MANIFEST, "main.py": MAIN, "a\\b.py": "x"}), "backslash"),
    ("symlink", lambda: make_zip({"manifest.json": MANIFEST, "main.py": MAIN}, symlinks={"link": "/etc/passwd"}),
     "symlink"),
    ("device", lambda: make_zip({"manifest.json": MANIFEST, "main.py": MAIN, "dev": ""},
                                modes={"dev": stat.S_IFCHR | 0o644}), "regular files"),
    ("too many files", lambda: make_zip({"manifest.json": MANIFEST, "main.py": MAIN,
                                         **{f"f{i}.txt": "x" for i in range(30)}}), "at most 20"),
    ("zip bomb", lambda: make_zip({"manifest.json": MANIFEST, "main.py": MAIN, "big.txt": b"\0" * 300_000}),
     "unpacks to"),
    ("bad manifest", lambda: make_zip({"manifest.json": '{"id": "Bad Id!"}', "main.py": MAIN}), "'id'"),
    ("missing main", lambda: make_zip({"manifest.json": MANIFEST}), "main"),
    ("no manifest", lambda: make_zip({"main.py": MAIN}), "manifest.json"),
    ("not a zip", lambda: b"PK-not-really", "not a valid zip"),
])
async def test_malicious_or_broken_zips_are_refused_and_write_nothing(
        client: httpx.AsyncClient, host: Host, name: str, archive: Any, message: str) -> None:
    r = await upload(client, archive())
    assert r.status_code in (400, 422), (name, r.text)
    assert message in r.json()["error"], (name, r.json())
    assert plugins_dir_listing(host) == [], name
    assert "z" not in host.manager


async def test_oversize_upload_is_413_and_writes_nothing(client: httpx.AsyncClient, host: Host) -> None:
    import os

    # just past the cap (seen in the parsed form) and far past it (cut while streaming): both name the
    # operator's install_zip_max_bytes, never the cap plus the multipart allowance
    for pad in (80_000, 400_000):
        r = await upload(client, make_zip({"manifest.json": MANIFEST, "main.py": MAIN, "pad": os.urandom(pad)}))
        assert r.status_code == 413
        assert r.json()["error"] == "plugin zip larger than 65536 bytes (install_zip_max_bytes)", pad
        assert plugins_dir_listing(host) == []


async def test_upload_without_file_field_is_a_clear_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/plugins", files={"other": ("x", b"x")}, headers=ADMIN)
    assert r.status_code == 400 and "'file'" in r.json()["error"]


async def test_failed_enable_is_a_409_naming_the_reason(client: httpx.AsyncClient, host: Host,
                                                        write_plugin: WritePlugin) -> None:
    host.load_plugin(write_plugin("""
        from plugbox.sdk import Plugin
        class P(Plugin):
            async def on_enable(self, ctx):
                raise RuntimeError("boom at enable")
    """))
    r = await client.post("/api/plugins/p/enable", headers=ADMIN)
    assert r.status_code == 409 and "boom at enable" in r.json()["error"]


# -- config --

async def test_config_secrets_are_masked_kept_and_validated(client: httpx.AsyncClient, host: Host,
                                                            write_plugin: WritePlugin) -> None:
    host.load_plugin(write_plugin("from plugbox.sdk import Plugin\nclass P(Plugin): pass\n",
                                  configSchema=SECRET_SCHEMA))
    r = await client.put("/api/plugins/p/config", json={"apiToken": "tok-123", "greeting": "yo"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["config"]["apiToken"] != "tok-123"
    got = (await client.get("/api/plugins/p/config", headers=READER)).json()
    assert "tok-123" not in json.dumps(got)
    assert "tok-123" not in (await client.get("/api/plugins/p", headers=READER)).text
    r = await client.put("/api/plugins/p/config", json={**got["config"], "greeting": "hey"}, headers=ADMIN)
    assert r.status_code == 200
    assert host.manager.get("p").record.config["apiToken"] == "tok-123"
    assert host.manager.get("p").record.config["greeting"] == "hey"
    r = await client.put("/api/plugins/p/config", json={"timeoutMs": 5}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["field"] == "timeoutMs"
    r = await client.put("/api/plugins/p/config", json={"timeoutMs": 5, "greeting": 3, "typo": 1}, headers=ADMIN)
    assert r.status_code == 422
    for field in ("timeoutMs", "greeting", "typo"):  # every wrong field in one answer
        assert f"config field {field!r}" in r.json()["error"], r.json()
    r = await client.put("/api/plugins/p/config", content=b"{not json", headers=ADMIN)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


async def test_session_config_and_active_sessions(client: httpx.AsyncClient, host: Host,
                                                  write_plugin: WritePlugin) -> None:
    host.load_plugin(write_plugin("from plugbox.sdk import Plugin\nclass P(Plugin): pass\n",
                                  configSchema=SECRET_SCHEMA, sessions=["s1", "s2"]))
    r = await client.put("/api/plugins/p/sessions/s1/config", json={"greeting": "per-session"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["effective"]["greeting"] == "per-session"
    assert (await client.get("/api/plugins/p/sessions/s2/config", headers=READER)).json()["config"] == {}
    for session in ("s2", "s9"):
        await host.engine.create_session(session)
    r = await client.put("/api/plugins/p/sessions", json={"activeSessions": ["s9"]}, headers=ADMIN)
    assert r.status_code == 422 and "s9" in r.json()["error"]  # known to the engine, not to the manifest
    r = await client.put("/api/plugins/p/sessions", json={"activeSessions": ["s2"]}, headers=ADMIN)
    assert (await client.get("/api/plugins/p/sessions", headers=READER)).json()["activeSessions"] == ["s2"]


# -- sessions, errors, schema --

async def test_injection_errors_are_clear(client: httpx.AsyncClient) -> None:
    msg = {"chatId": "15550001111@c.us", "body": "x"}
    r = await client.post("/api/sessions/nope/messages", json=msg, headers=ADMIN)
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = await client.post(f"/api/sessions/{SESSION}/messages", json={"body": "x"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["field"] == "chatId"
    sessions = (await client.get("/api/sessions", headers=READER)).json()["sessions"]
    assert [s["id"] for s in sessions] == [SESSION]


async def test_unknown_paths_and_plugins_are_json_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/nowhere")).json() == {"error": "not found"}
    r = await client.get("/api/plugins/ghost", headers=READER)
    assert r.status_code == 404 and "ghost" in r.json()["error"]


async def test_openapi_lists_every_route(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    app = client._transport.app  # type: ignore[attr-defined]
    for route in app.routes:
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        assert route.path in doc["paths"], route.path
        assert methods <= set(doc["paths"][route.path]), route.path


async def test_dashboard_is_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard")
    assert r.status_code == 200 and "<table" in r.text and "frame-ancestors" in r.headers["content-security-policy"]


async def test_enable_fixture_plugin_shows_in_list(client: httpx.AsyncClient, host: Host,
                                                   write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin("from plugbox.sdk import Plugin\nclass P(Plugin): pass\n"))
    plugins = (await client.get("/api/plugins", headers=READER)).json()["plugins"]
    assert [(p["id"], p["status"]) for p in plugins] == [("p", "enabled")]


@pytest.mark.parametrize("settings_overrides", [{"api_keys": ("reader-key",), "storage_quota_bytes": 20_000,
                                                 "storage_total_bytes": 30_000}])
async def test_metrics_show_what_each_plugin_holds_and_storage_refusals_by_reason(
    client: httpx.AsyncClient, host: Host
) -> None:
    for plugin_id in ("a", "b", "c"):
        await host.storage.set(plugin_id, "first", "v")
    with pytest.raises(StorageError, match="storage_total_bytes"):
        for n in range(20):  # past its share of 10,000 bytes
            await host.storage.set("a", f"k{n}", "x" * 900)
    metrics = (await client.get("/metrics", headers=READER)).text
    assert f'plugbox_storage_used_bytes{{plugin="a"}} {float(host.storage.usage("a"))}' in metrics
    assert f'plugbox_storage_used_bytes{{plugin="b"}} {float(host.storage.usage("b"))}' in metrics
    assert 'plugbox_storage_refusals_total{plugin="a",reason="total"} 1.0' in metrics
    assert 'reason="quota"' not in metrics and 'plugin="b",reason' not in metrics
