"""Many hosts, one PostgreSQL database: an ingress instance created, rotated or deleted through one
host is served that way by the others within about a second (each host caches a plugin's instances
so that an ingress request costs no database round trip; a change announces itself)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from plugbox.host import Host
from plugbox.ingress.instances import InstanceSpec
from plugbox.settings import load_settings


async def _within(check: Callable[[], bool], seconds: float) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def _secret(host: Host) -> str | None:
    found = host.ingress_instances.get("w", "acme")
    return None if found is None else found.secrets["webhookSecret"]


async def test_an_instance_changed_on_one_host_is_served_so_by_the_others(
    tmp_path: Path, make_postgres_url: Callable[[], str]
) -> None:
    url = make_postgres_url()
    a, b = (Host(load_settings(environ={}, data_dir=str(tmp_path / name), database_url=url), bundled=False)
            for name in ("a", "b"))
    try:
        await a.start()
        await b.start()
        assert _secret(b) is None  # cached: b now holds "no instances" for the plugin

        spec = InstanceSpec(id="acme", session_id=None, secrets={"webhookSecret": "one"}, description="")
        await a.ingress_instances.create("w", spec)
        took = await _within(lambda: _secret(b) == "one", seconds=2.0)
        print(f"a new instance served by the other host after {took:.2f} s")

        await b.ingress_instances.update("w", InstanceSpec(id="acme", session_id=None,
                                                           secrets={"webhookSecret": "two"}, description=""))
        assert _secret(b) == "two"  # the writing host at once
        await _within(lambda: _secret(a) == "two", seconds=2.0)

        await a.ingress_instances.delete("w", "acme")
        assert _secret(a) is None
        await _within(lambda: _secret(b) is None, seconds=2.0)
    finally:  # before the database is dropped
        await a.stop()
        await b.stop()
