"""Packages live in the shared database: an install on one host appears on another, an uninstall
disappears from it (two in-process hosts on one PostgreSQL database; no plugin code runs)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from plugbox.errors import PluginNotFound
from plugbox.host import Host
from plugbox.settings import load_settings
from tests.integration.conftest import wait_for
from tests.integration.test_serve_blackbox import _echo_zip


def _host(root: Path, url: str) -> Host:
    settings = load_settings(environ={}, data_dir=str(root / "data"), plugins_dir=str(root / "plugins"),
                             database_url=url, cluster_lease_interval_ms=200)
    return Host(settings, bundled=False)


def _known(host: Host, plugin_id: str) -> bool:
    try:
        host.plugin(plugin_id)
    except PluginNotFound:
        return False
    return True


async def test_an_install_reaches_the_other_host_and_so_does_the_uninstall(
    tmp_path: Path, make_postgres_url: Callable[[], str]
) -> None:
    url = make_postgres_url()
    a, b = _host(tmp_path / "a", url), _host(tmp_path / "b", url)
    try:
        await a.start()
        await b.start()
        await a.install(io.BytesIO(_echo_zip()))
        await wait_for(lambda: _known(b, "echo"), within=2.0)
        assert (tmp_path / "b" / "plugins" / "echo" / "manifest.json").is_file()  # unpacked from the database
        await a.set_config("echo", {"prefix": "hi: "})
        await wait_for(lambda: b.manager.get("echo").record.config.get("prefix") == "hi: ", within=1.0)

        await a.uninstall("echo")
        await wait_for(lambda: not _known(b, "echo"), within=2.0)
        assert not (tmp_path / "b" / "plugins" / "echo").exists()
    finally:
        await a.stop()
        await b.stop()


async def test_a_host_started_later_catches_up_with_what_was_installed_before(
    tmp_path: Path, make_postgres_url: Callable[[], str]
) -> None:
    url = make_postgres_url()
    a = _host(tmp_path / "a", url)
    try:
        await a.start()
        await a.install(io.BytesIO(_echo_zip()))
        late = _host(tmp_path / "late", url)
        try:
            await late.start()  # catches up before it takes any lease: no waiting needed
            assert _known(late, "echo")
        finally:
            await late.stop()
    finally:
        await a.stop()
