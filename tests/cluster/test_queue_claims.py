"""Many hosts, one PostgreSQL database: each queued delivery reaches its receiver once (docs/postgres.md).

Three real `plugbox serve` processes share one database, and with it the outbound webhook queue and
the async ingress queue. Every host's runner looks at every due row, so without claims two hosts
would often attempt the same delivery at once. With them:

- while the hosts live, each webhook delivery is accepted by the receiver exactly once, and each
  async ingress delivery runs its plugin's handler exactly once;
- when a host is SIGKILLed mid-delivery, nothing is lost: its claims lapse and the survivors
  deliver the rest. Only what the dead host had in flight may arrive twice (at-least-once).
"""

from __future__ import annotations

import functools
import io
import json
import signal
import subprocess
import textwrap
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.serving import serving
from tests.webhook_receiver import Receiver, receiving

pytestmark = pytest.mark.timeout(300)

ADMIN_KEY = "cluster-admin-key"
HEADERS = {"X-API-Key": ADMIN_KEY}
SECRET = "hook-secret"
IN_FLIGHT = 4  # webhook attempts one host runs at once: the most a host killed mid-delivery can repeat
SETTINGS = {
    "PLUGBOX_CLUSTER_LEASE_INTERVAL_MS": "500",
    "PLUGBOX_QUEUE_CLAIM_MS": "3000",
    "PLUGBOX_QUEUE_POLL_MS": "200",
    "PLUGBOX_FETCH_EXEMPT_HOSTS": "127.0.0.1",
    "PLUGBOX_WEBHOOK_BACKOFF_INITIAL_MS": "50",
    "PLUGBOX_WEBHOOK_BACKOFF_MAX_MS": "200",
    "PLUGBOX_WEBHOOK_MAX_ATTEMPTS": "1000",
    "PLUGBOX_WEBHOOK_MAX_IN_FLIGHT": str(IN_FLIGHT),
    "PLUGBOX_INGRESS_MAX_IN_FLIGHT_PER_PLUGIN": "2",
}
RECORDER = """
import asyncio, uuid
from plugbox.sdk import Plugin

class Recorder(Plugin):
    async def on_load(self, ctx):
        ctx.register_webhook("events", self.handle)

    async def handle(self, request):
        await asyncio.sleep(request["json"]["sleep"])
        # A fresh key per completed run: a delivery run twice shows twice.
        await self.ctx.storage.set(f"done:{request['deliveryId']}:{uuid.uuid4().hex}", request["attempt"])
        return {"status": 200}
"""
MANIFEST = {"id": "recorder", "name": "recorder", "version": "1.0.0", "type": "extension", "main": "main.py",
            "permissions": ["webhook:ingress", "storage:use"],
            "configSchema": {"type": "object", "properties": {"webhookSecret": {"type": "string", "secret": True}}},
            "ingress": [{"route": "events", "mode": "async",
                         "signature": {"scheme": "shared-secret", "header": "X-Token"}}]}


def _wait_for(check: Callable[[], bool], what: str, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _recorder_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("recorder/manifest.json", json.dumps(MANIFEST))
        zf.writestr("recorder/main.py", textwrap.dedent(RECORDER))
    return buf.getvalue()


@contextmanager
def _hosts(tmp_path: Path, url: str, n: int) -> Iterator[list[tuple[httpx.Client, Callable[[], None]]]]:
    """`n` `plugbox serve` hosts on the database at `url`: (API client, SIGKILL it) each."""
    with ExitStack() as stack:
        out: list[tuple[httpx.Client, Callable[[], None]]] = []
        for i in range(n):
            (tmp_path / f"h{i}").mkdir()
            proc, base, _log = stack.enter_context(serving(tmp_path / f"h{i}", ADMIN_KEY,
                                                           settings={**SETTINGS, "PLUGBOX_DATABASE_URL": url}))
            client = stack.enter_context(httpx.Client(base_url=base, headers=HEADERS, timeout=30))
            out.append((client, functools.partial(_kill, proc)))
        yield out


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)  # no shutdown: its claims stay until they lapse
    proc.wait(10)


def _holder(clients: list[httpx.Client]) -> httpx.Client:
    """The host holding the lease of the `default` session: the one that runs its hooks."""
    def holders() -> list[httpx.Client]:
        return [c for c in clients if next(s for s in c.get("/api/sessions").json()["sessions"]
                                           if s["id"] == "default")["leased"]]
    _wait_for(lambda: len(holders()) == 1, "one lease holder of `default`")
    return holders()[0]


@contextmanager
def _cluster_with_queued_webhooks(
    tmp_path: Path, url: str, receiver: Receiver, messages: int, n_hosts: int
) -> Iterator[tuple[list[tuple[httpx.Client, Callable[[], None]]], list[str]]]:
    """Hosts with one subscription and `messages` deliveries queued (while the receiver refuses
    them, if it does)."""
    with _hosts(tmp_path, url, n_hosts) as hosts:
        clients = [c for c, _ in hosts]
        r = clients[0].post("/api/webhooks", json={"url": receiver.url, "events": ["message:received"]})
        assert r.status_code == 201, r.text
        # Whichever host holds the session observes its events: each must know the subscription.
        _wait_for(lambda: all(len(c.get("/api/webhooks").json()["webhooks"]) == 1 for c in clients),
                  "the subscription on every host", within_s=2.0)
        holder = _holder(clients)
        for i in range(messages):
            r = holder.post("/api/sessions/default/messages", json={"chatId": "15550109999@c.us", "body": f"m{i}"})
            assert r.status_code == 200, r.text
        queued = clients[0].get("/api/webhooks/deliveries", params={"state": "pending", "limit": 1000}).json()
        ids = [d["id"] for d in queued["deliveries"]]
        assert len(ids) == messages
        yield hosts, ids


def test_three_hosts_deliver_each_queued_webhook_exactly_once(
    tmp_path: Path, make_postgres_url: Callable[[], str]
) -> None:
    healthy = threading.Event()
    with receiving(lambda _id, _nth: 200 if healthy.is_set() else 503) as receiver, \
            _cluster_with_queued_webhooks(tmp_path, make_postgres_url(), receiver, 30, 3) as (hosts, ids):
        # Every host retries the refused deliveries every 50-200 ms: the moment the receiver
        # recovers, three runners find the same rows due.
        _wait_for(lambda: len({r.delivery_id for r in receiver.requests}) == len(ids), "every delivery tried")
        healthy.set()
        _wait_for(lambda: len(receiver.accepted()) >= len(ids), "every delivery accepted")
        time.sleep(1.0)  # a duplicate would arrive within a retry or two
        client = hosts[1][0]
        delivered = client.get("/api/webhooks/deliveries", params={"state": "delivered", "limit": 1000}).json()
    accepted = Counter(r.delivery_id for r in receiver.accepted())
    print(f"webhooks: {len(ids)} queued, {len(accepted)} delivered, "
          f"{sum(accepted.values()) - len(accepted)} duplicates, {len(set(ids) - set(accepted))} lost")
    assert accepted == Counter({i: 1 for i in ids})
    assert {d["id"] for d in delivered["deliveries"]} == set(ids)


def test_a_host_killed_mid_delivery_loses_no_webhook(tmp_path: Path, make_postgres_url: Callable[[], str]) -> None:
    healthy = threading.Event()
    with receiving(lambda _id, _nth: 200 if healthy.is_set() else 503) as receiver, \
            _cluster_with_queued_webhooks(tmp_path, make_postgres_url(), receiver, 40, 3) as (hosts, ids):
        receiver.delay_s = 0.5  # each answer takes a while: every host has attempts in flight
        healthy.set()
        _wait_for(lambda: len(receiver.accepted()) >= 8, "the first deliveries")
        _client, kill = hosts[0]
        kill()  # SIGKILL mid-delivery: no shutdown, its claims stay until they lapse
        accepted_at_kill = len(receiver.accepted())
        _wait_for(lambda: len({r.delivery_id for r in receiver.accepted()}) >= len(ids), "every delivery")
        survivor = hosts[1][0]
        _wait_for(lambda: survivor.get("/api/webhooks/deliveries", params={"state": "pending"}).json()[
            "deliveries"] == [], "no delivery left pending")
    accepted = Counter(r.delivery_id for r in receiver.accepted())
    repeated = sorted(i for i, n in accepted.items() if n > 1)
    print(f"webhooks with a host killed after {accepted_at_kill} accepted: {len(ids)} queued, "
          f"{len(accepted)} delivered, {len(repeated)} delivered twice, {len(set(ids) - set(accepted))} lost")
    assert set(accepted) == set(ids)  # nothing lost
    assert len(repeated) <= IN_FLIGHT and max(accepted.values()) <= 2  # only what the dead host had in flight


def _done(url: str) -> Counter[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT key FROM plugin_kv WHERE plugin_id = 'recorder' AND key LIKE 'done:%'").fetchall()
    return Counter(str(key).split(":")[1] for (key,) in rows)


@contextmanager
def _cluster_with_recorder(tmp_path: Path, url: str, n: int) -> Iterator[list[tuple[httpx.Client, Callable[[], None]]]]:
    with _hosts(tmp_path, url, n) as hosts:
        first = hosts[0][0]
        r = first.post("/api/plugins", files={"file": ("recorder.zip", _recorder_zip(), "application/zip")})
        assert r.status_code == 201, r.text
        assert first.put("/api/plugins/recorder/config", json={"webhookSecret": SECRET}).status_code == 200
        assert first.post("/api/plugins/recorder/enable").status_code == 200
        _wait_for(lambda: all(c.get("/api/plugins/recorder").json().get("status") == "enabled" for c, _ in hosts),
                  "the plugin enabled on every host")
        yield hosts


def _send(hosts: list[tuple[httpx.Client, Callable[[], None]]], n: int, sleep_s: float) -> list[str]:
    """`n` async ingress requests, spread over the hosts; the ids of the queued deliveries."""
    ids = []
    for i in range(n):
        client = hosts[i % len(hosts)][0]
        r = client.post("/api/ingress/recorder/default/events", json={"n": i, "sleep": sleep_s},
                        headers={"X-Token": SECRET})
        assert r.status_code == 202, r.text
        ids.append(str(r.json()["id"]))
    return ids


def _delivered(client: httpx.Client) -> set[str]:
    found = client.get("/api/plugins/recorder/ingress/deliveries", params={"state": "delivered", "limit": 1000})
    return {str(d["id"]) for d in found.json()["deliveries"]}


def test_three_hosts_run_each_async_ingress_delivery_once(tmp_path: Path, make_postgres_url: Callable[[], str]) -> None:
    url = make_postgres_url()
    with _cluster_with_recorder(tmp_path, url, 3) as hosts:
        ids = _send(hosts, 24, sleep_s=0.2)
        _wait_for(lambda: _delivered(hosts[0][0]) == set(ids), "every ingress delivery")
        time.sleep(1.0)
    done = _done(url)
    print(f"ingress: {len(ids)} queued, {len(done)} run, {sum(done.values()) - len(done)} run twice, "
          f"{len(set(ids) - set(done))} lost")
    assert done == Counter({i: 1 for i in ids})


def test_a_host_killed_mid_handler_loses_no_ingress_delivery(
    tmp_path: Path, make_postgres_url: Callable[[], str]
) -> None:
    url = make_postgres_url()
    with _cluster_with_recorder(tmp_path, url, 3) as hosts:
        ids = _send(hosts, 18, sleep_s=1.0)
        _wait_for(lambda: sum(_done(url).values()) >= 3, "the first deliveries")
        time.sleep(0.4)  # handlers are mid-sleep on every host
        hosts[0][1]()  # SIGKILL: its workers die with it, its handlers never finish
        _wait_for(lambda: _delivered(hosts[1][0]) == set(ids), "every ingress delivery after the kill")
    done = _done(url)
    print(f"ingress with a host killed: {len(ids)} queued, {len(done)} run, "
          f"{sum(done.values()) - len(done)} run twice, {len(set(ids) - set(done))} lost")
    # A handler killed before it finished never recorded: each delivery completed exactly once.
    assert done == Counter({i: 1 for i in ids})
