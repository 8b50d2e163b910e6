"""Every hook event fires on a real host: the catch-all example plugin, confined in a real worker,
registers every name in `plugbox.events.EVENTS`; the scenario `plugbox demo` runs (the loopback
engine's simulations, a refused send, an outbound webhook to a local receiver that fails its first
attempt, a signed ingress request the handler cannot take) makes each of them fire at least once,
and every payload the plugin saw is the event's documented shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from plugbox import payloads
from plugbox.api import create_app
from plugbox.cli import scenario
from plugbox.engines.loopback import LoopbackEngine
from plugbox.events import EVENTS
from plugbox.host import Host

from ..webhook_receiver import receiving
from .conftest import host_settings

KEY = {"X-API-Key": "k"}


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    settings = host_settings(tmp_path, api_keys=("k",), fetch_exempt_hosts=("127.0.0.1",),
                             webhook_backoff_initial_ms=10, webhook_backoff_max_ms=40)
    async with Host(settings, engine=LoopbackEngine(), bundled=False) as h:
        yield h


async def test_the_catchall_observes_every_event_and_each_payload_fits_its_schema(host: Host) -> None:
    with receiving(lambda _id, nth: 500 if nth == 1 else 200) as receiver:
        await scenario.every_event(host, receiver.url, api_key="k")
    record = scenario.seen(host)
    assert set(record) == EVENTS, f"never observed: {sorted(EVENTS - set(record))}"
    for event, entry in record.items():
        assert payloads.problem(event, entry["last"]) is None, (event, entry["last"])
    assert record["message:ack"]["count"] == 2 and record["message:ack"]["last"]["status"] == "read"
    assert record["session:error"]["last"] == {"reason": "simulated crash"}
    assert record["ingress:error"]["last"]["pluginId"] == "catchall"
    assert record["webhook:error"]["last"]["willRetry"] is True
    assert record["webhook:after"]["last"]["outcome"] == "delivered"
    assert [r.status for r in receiver.requests] == [500, 200]
    assert host.plugin("catchall").status == "enabled"  # it saw everything and is still healthy


@pytest.fixture
async def client(host: Host) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(host)), base_url="http://t") as c:
        yield c


async def test_the_injection_routes_drive_the_engine_simulations(host: Host, client: httpx.AsyncClient) -> None:
    engine = host.loopback
    await engine.create_session("s1", start=False)
    r = await client.post("/api/sessions/s1/start", json={"pair": True}, headers=KEY)
    assert r.status_code == 200 and r.json()["qr"] == engine.qr_code("s1") and engine.is_live("s1")
    sent = await host.messages.send_text("s1", "15550001111@c.us", "hi")
    r = await client.post(f"/api/sessions/s1/messages/{sent['id']}/ack", headers=KEY)
    assert r.json() == {"messageId": sent["id"], "status": "delivered", "ack": 2}
    r = await client.post(f"/api/sessions/s1/messages/{sent['id']}/ack", json={"status": "delivered"}, headers=KEY)
    assert r.status_code == 422 and "only move forward" in r.json()["error"]
    r = await client.post("/api/sessions/s1/messages/lb-s1-404/ack", headers=KEY)
    assert r.status_code == 422 and "not found" in r.json()["error"]
    r = await client.post(f"/api/sessions/s1/messages/{sent['id']}/ack", json={"status": 3}, headers=KEY)
    assert r.status_code == 422 and r.json()["field"] == "status"
    r = await client.delete(f"/api/sessions/s1/messages/{sent['id']}", headers=KEY)
    assert r.json() == {"sessionId": "s1", "message": {"id": sent["id"], "chatId": "15550001111@c.us"}}
    assert await engine.get_chat_history("s1", "15550001111@c.us") == []
    r = await client.post("/api/sessions/s1/error", headers=KEY)
    assert r.status_code == 200 and not engine.is_live("s1")
    assert (await client.post("/api/sessions/nope/error", headers=KEY)).status_code == 404
    assert (await client.delete(f"/api/sessions/s1/messages/{sent['id']}")).status_code == 401


async def test_the_demo_prints_every_event_the_catchall_observed(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from plugbox.cli.demo import run_demo

    assert await run_demo(tmp_path / "demo") == 0
    out = capsys.readouterr().out
    assert f"all {len(EVENTS)} hook events observed" in out
    assert "never" not in out and all(event in out for event in EVENTS)
