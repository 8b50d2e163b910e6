"""An async ingress route's deliveries survive a host killed mid-queue, and each reaches the plugin
exactly once (issue 13 acceptance).

A real `plugbox serve` takes 12 signed requests on an async route whose handler takes 1.5 s and may
run two at a time; each answer is a 202 within milliseconds. Once two deliveries have completed,
while the next two handlers are mid-sleep, the host is SIGKILLed (its workers die with it). A new
`plugbox serve` on the same data dir re-enables the plugin and delivers the rest. The plugin records
every completed run under a fresh key in its own storage, so a delivery run twice would show twice."""

from __future__ import annotations

import json
import sqlite3
import statistics
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ..serving import serving

pytestmark = pytest.mark.timeout(180)

KEY = "admin-key"
ADMIN = {"X-API-Key": KEY}
SECRET = "hook-secret"
DELIVERIES = 12
SETTINGS = {"PLUGBOX_INGRESS_MAX_IN_FLIGHT_PER_PLUGIN": "2"}
CODE = """
import asyncio, uuid
from plugbox.sdk import Plugin

class Slow(Plugin):
    async def on_load(self, ctx):
        ctx.register_webhook("events", self.handle)

    async def handle(self, request):
        await asyncio.sleep(1.5)
        await self.ctx.storage.set(f"done:{request['deliveryId']}:{uuid.uuid4().hex}", request["attempt"])
        return {"status": 200}
"""
MANIFEST = {"id": "slow", "name": "slow", "version": "1.0.0", "type": "extension", "main": "main.py",
            "permissions": ["webhook:ingress", "storage:use"],
            "configSchema": {"type": "object", "properties": {"webhookSecret": {"type": "string", "secret": True}}},
            "ingress": [{"route": "events", "mode": "async",
                         "signature": {"scheme": "shared-secret", "header": "X-Token"}}]}


def _until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _done(db: Path) -> Counter[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT key FROM plugin_kv WHERE plugin_id = 'slow' AND key LIKE 'done:%'").fetchall()
    return Counter(str(key).split(":")[1] for (key,) in rows)


def test_queued_deliveries_reach_the_plugin_exactly_once_across_a_host_kill(tmp_path: Path) -> None:
    src = tmp_path / "src" / "slow"
    src.mkdir(parents=True)
    (src / "manifest.json").write_text(json.dumps(MANIFEST))
    (src / "main.py").write_text(textwrap.dedent(CODE))
    db = tmp_path / "data" / "plugbox.db"
    with serving(tmp_path, KEY, plugins={"slow": src}, settings=SETTINGS) as (proc, url, _log):
        assert httpx.put(f"{url}/api/plugins/slow/config", headers=ADMIN,
                         json={"webhookSecret": SECRET}).status_code == 200
        assert httpx.post(f"{url}/api/plugins/slow/enable", headers=ADMIN).status_code == 200
        ids, latencies = [], []
        with httpx.Client() as client:
            for n in range(DELIVERIES):
                started = time.perf_counter()
                r = client.post(f"{url}/api/ingress/slow/default/events", json={"n": n}, headers={"X-Token": SECRET})
                latencies.append(time.perf_counter() - started)
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
        print(f"async ingress over HTTP: p50 {statistics.median(latencies) * 1000:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms (handler 1500 ms)")
        assert statistics.median(latencies) < 0.050
        _until(lambda: sum(_done(db).values()) >= 2, "the first deliveries")
        time.sleep(0.4)  # the next two handlers are now mid-sleep
        proc.kill()  # SIGKILL: no shutdown, no flush; the workers die with the host
        proc.wait()
    before = _done(db)
    assert 2 <= sum(before.values()) < DELIVERIES

    with serving(tmp_path, KEY, settings=SETTINGS) as (_proc, url, _log):
        def delivered() -> list[dict[str, object]]:
            found: list[dict[str, object]] = httpx.get(
                f"{url}/api/plugins/slow/ingress/deliveries", headers=ADMIN,
                params={"state": "delivered", "limit": 1000}).json()["deliveries"]
            return found

        _until(lambda: len(delivered()) == DELIVERIES, "every delivery after the restart")
        finished = {str(d["id"]) for d in delivered()}
        pending = httpx.get(f"{url}/api/plugins/slow/ingress/deliveries", headers=ADMIN,
                            params={"state": "pending"}).json()["deliveries"]

    assert _done(db) == Counter({i: 1 for i in ids})  # nothing lost, nothing run twice
    assert finished == set(ids) and pending == []
