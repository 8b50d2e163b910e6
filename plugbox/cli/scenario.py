"""A scenario that makes every hook event fire at least once on a real host, with the catch-all
example plugin (confined in a worker) recording what it saw. `plugbox demo` runs it and prints the
record; an integration test runs it and checks the record covers `plugbox.events.EVENTS`.

It drives only public surfaces: the loopback engine's simulations, the message service, the HTTP
API (in process, through its ASGI app: the injection routes and a signed ingress request), and an
outbound webhook subscription whose receiver the caller provides. It owns no state of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx

from plugbox.api import create_app
from plugbox.errors import EngineError
from plugbox.host import Host
from plugbox.webhooks import parse_spec

__all__ = ["CATCHALL", "PLUGIN_ID", "SESSION", "TOKEN", "every_event", "seen"]

CATCHALL = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "catchall"
PLUGIN_ID = "catchall"
SESSION = "events"
TOKEN = "catchall-report-token"
PEER = "15550001111@c.us"


def seen(host: Host) -> dict[str, dict[str, Any]]:
    """What the catch-all recorded: per event, `{"count", "last"}` (its last payload)."""
    out: dict[str, dict[str, Any]] = {}
    for key in host.storage.list(PLUGIN_ID, "seen:"):
        found, value = host.storage.get(PLUGIN_ID, key)
        if found:
            out[key.removeprefix("seen:")] = value
    return out


async def every_event(host: Host, receiver_url: str, *, api_key: str, within: float = 10.0) -> None:
    """Enable the catch-all on `SESSION` and make every event fire; returns once the outbound
    webhook's delivery (to `receiver_url`, which should fail its first attempt to show
    `webhook:error`) has finished, or after `within` seconds."""
    engine = host.loopback
    host.load_plugin(CATCHALL)
    await host.set_active_sessions(PLUGIN_ID, [SESSION])
    await host.set_config(PLUGIN_ID, {"reportToken": TOKEN})
    await host.enable(PLUGIN_ID)
    await host.webhooks.create(parse_spec({"url": receiver_url, "events": ["message:sent"]}).complete())

    await engine.create_session(SESSION, start=False)  # session:created
    await engine.start_session(SESSION, pair=True)  # session:starting, session:qr, session:ready
    inbound = await engine.inject_inbound(SESSION, PEER, "hello")  # message:persisted, message:received
    sent = await host.messages.send_text(SESSION, PEER, "hi there")  # message:sending, persisted, sent
    with contextlib.suppress(EngineError):  # a send the engine refuses (a group it is not in): message:failed
        await host.messages.send_text(SESSION, "120363000000000009@g.us", "anyone?")
    headers = {"X-API-Key": api_key}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(host)), base_url="http://plugbox") as api:
        base = f"/api/sessions/{SESSION}"
        for status in ("delivered", "read"):  # message:ack, twice
            (await api.post(f"{base}/messages/{sent['id']}/ack", json={"status": status}, headers=headers)
             ).raise_for_status()
        (await api.delete(f"{base}/messages/{inbound['id']}", headers=headers)).raise_for_status()  # deleted
        # A signed request the handler cannot take: ingress:error, to the catch-all only.
        await api.post(f"/ingress/{PLUGIN_ID}/report", content=b"[1, 2]", headers={"X-Token": TOKEN})
        await engine.stop_session(SESSION)  # session:disconnected
        (await api.post(f"{base}/error", json={"reason": "simulated crash"}, headers=headers)
         ).raise_for_status()  # session:error
    deadline = time.monotonic() + within
    while "webhook:after" not in seen(host) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    await engine.delete_session(SESSION)  # session:deleted
    await host.bus.settled()  # the engine's events do not wait for observers; the report does
