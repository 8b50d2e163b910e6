"""Many hosts, one PostgreSQL database: a plugin's status is what each host observed, shown per host
(docs/postgres.md). The operator's enable is shared; a plugin that fails to start on one host only is
in `error` there and running on the other, and the API of either host lists both, marking a host
that went away as not live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from plugbox.api import create_app
from plugbox.host import Host
from plugbox.sdk import Plugin
from plugbox.settings import load_settings

ADMIN = {"X-API-Key": "admin-key"}
MANIFEST = {"id": "probe", "name": "probe", "version": "1.0.0", "type": "extension", "main": "builtin"}


class Fine(Plugin):
    pass


class BrokenHere(Plugin):
    """What this host lacks (a local file, a reachable service) makes the same plugin fail here only."""

    def on_enable(self, ctx: Any) -> None:
        raise RuntimeError("no route to the CRM from this host")


async def _within(check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        await asyncio.sleep(0.05)


def _host(tmp_path: Path, name: str, url: str, plugin: type[Plugin]) -> Host:
    settings = load_settings(environ={}, data_dir=str(tmp_path / name), database_url=url, host_id=f"host-{name}",
                             admin_api_keys=("admin-key",), cluster_lease_interval_ms=200)
    host = Host(settings, bundled=False)
    host.register_builtin(plugin, MANIFEST)
    return host


async def test_a_plugin_failing_on_one_host_shows_error_there_and_running_on_the_other(
    tmp_path: Path, make_postgres_url: Callable[[], str]
) -> None:
    url = make_postgres_url()
    a, b = _host(tmp_path, "a", url, BrokenHere), _host(tmp_path, "b", url, Fine)
    api_a = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(a)), base_url="http://a", headers=ADMIN)
    api_b = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(b)), base_url="http://b", headers=ADMIN)
    try:
        await a.start()
        await b.start()
        r = await api_b.post("/api/plugins/probe/enable")
        assert r.status_code == 200, r.text

        async def a_followed_and_failed() -> bool:
            return (await api_a.get("/api/plugins/probe")).json()["status"] == "error"

        await _within(a_followed_and_failed, seconds=3.0)  # the enable is shared; a's failure is a's
        seen_on_a = (await api_a.get("/api/plugins/probe")).json()
        seen_on_b = (await api_b.get("/api/plugins/probe")).json()

        assert "no route to the CRM" in seen_on_a["error"] and seen_on_a["enabled"] is True
        assert (seen_on_b["status"], seen_on_b["error"], seen_on_b["lastError"]) == ("enabled", None, None)
        for seen, this in ((seen_on_a, "host-a"), (seen_on_b, "host-b")):
            hosts = {h["host"]: h for h in seen["hosts"]}
            assert sorted(hosts) == ["host-a", "host-b"]
            assert hosts["host-a"]["status"] == "error" and "no route to the CRM" in hosts["host-a"]["error"]
            assert (hosts["host-b"]["status"], hosts["host-b"]["error"]) == ("enabled", None)
            assert all(h["live"] and h["updatedAt"] for h in hosts.values())
            assert [h for h, v in hosts.items() if v["this"]] == [this]

        # A host joining later runs the plugin on its own account: a's error is not taken for its own.
        c = _host(tmp_path, "c", url, Fine)
        try:
            await c.start()
            view = c.plugin("probe")
            assert (view.status, view.error, view.last_error) == ("enabled", None, None)
            assert {h.host: h.status for h in c.plugin_hosts("probe")} == {
                "host-a": "error", "host-b": "enabled", "host-c": "enabled"}
        finally:
            await c.stop()

        # a host that stops is shown as not live, with its last word, until it comes back
        await a.stop()

        async def a_not_live() -> bool:
            hosts = {h["host"]: h for h in (await api_b.get("/api/plugins/probe")).json()["hosts"]}
            return not hosts["host-a"]["live"] and hosts["host-b"]["live"]

        await _within(a_not_live, seconds=3.0)
        hosts = {h["host"]: h for h in (await api_b.get("/api/plugins/probe")).json()["hosts"]}
        assert hosts["host-a"]["status"] == "error" and not hosts["host-c"]["live"]
    finally:  # before the database is dropped
        await api_a.aclose()
        await api_b.aclose()
        await a.stop()
        await b.stop()


async def test_on_sqlite_the_one_host_lists_itself(tmp_path: Path) -> None:
    host = Host(load_settings(environ={}, data_dir=str(tmp_path / "data"), admin_api_keys=("admin-key",)),
                bundled=False)
    host.register_builtin(Fine, MANIFEST)
    async with host, httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(host)), base_url="http://t",
                                       headers=ADMIN) as api:
        assert (await api.post("/api/plugins/probe/enable")).status_code == 200
        seen = (await api.get("/api/plugins/probe")).json()
        documented = (await api.get("/openapi.json")).json()["components"]["schemas"]["PluginHost"]
    assert seen["status"] == "enabled"
    assert all(set(h) == set(documented["required"]) == set(documented["properties"]) for h in seen["hosts"])
    assert [(h["host"], h["status"], h["live"], h["this"]) for h in seen["hosts"]] == [
        (host.host_id, "enabled", True, True)]
    # the generated name is kept, so a restarted host finds its own rows
    assert (tmp_path / "data" / "host-id").read_text().strip() == host.host_id
