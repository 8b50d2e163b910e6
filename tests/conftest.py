"""Shared fixtures: hosts on a temporary data dir (SQLite + loopback engine, no bundled plugins).

Settings are built with an empty environment so a developer's `PLUGBOX_*` variables never leak in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from plugbox.host import Host
from plugbox.settings import load_settings

MakeHost = Callable[..., Host]


@pytest.fixture
async def make_host(tmp_path: Path) -> AsyncIterator[MakeHost]:
    """`make_host(**setting_overrides)`: a new, not yet started Host on the test's data dir. Two hosts
    made in one test share the data dir, as a restart would. Every host is stopped at teardown."""
    hosts: list[Host] = []

    def make(**overrides: Any) -> Host:
        settings = load_settings(environ={}, data_dir=str(tmp_path / "data"), **overrides)
        host = Host(settings, bundled=False)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        await host.stop()
        await host.db.close()  # a host that was never started is not closed by stop()


@pytest.fixture
async def host(make_host: MakeHost) -> Host:
    """A started host with no plugins."""
    h = make_host()
    await h.start()
    return h
