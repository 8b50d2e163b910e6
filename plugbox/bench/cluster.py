"""`plugbox bench --scenario cluster`: several `plugbox serve` hosts on one PostgreSQL database.

Needs `PLUGBOX_DATABASE_URL` naming a PostgreSQL server where its role may create databases: the
scenario creates a database of its own there and drops it at the end. On loopback, with one
`ledger` plugin that stores one key per inbound message and then answers `ack <key>`, so a reply in
the injection's answer means the key was durably written (the capability call returned after
COMMIT). Three phases:

1. **one host**: every session on it; acknowledged messages per second under `clients` concurrent
   injectors, each sending to the host holding its session's lease;
2. **three hosts**: the same load spread by the leases (`/api/sessions` says who holds what);
3. **failover**: the load goes on while the host holding the most sessions is SIGKILLed; the
   failover time is how long after the kill every one of its sessions was acknowledged again by a
   survivor.

At the end every acknowledged key is read back from the database: `lost_acknowledged` counts those
missing (must be 0). During phase 3 an outbound webhook subscription sends every handled message to
a receiver in this process, so the shared delivery queue runs across the kill too: `webhooks`
counts what was queued, what the receiver accepted, the deliveries it accepted more than once
(only what the killed host had in flight may repeat: claimed deliveries) and those never accepted
(must be 0). The report is plain JSON data; `table.py` prints it like chaos and soak.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from plugbox.errors import BenchError

__all__ = ["run_cluster"]

Progress = Callable[[str], None]

ADMIN = "bench-cluster-admin"
_HEADERS = {"X-API-Key": ADMIN}
_CHAT = "15550001234@c.us"
_LEASE_INTERVAL_MS = 500

_MANIFEST = {"id": "ledger", "name": "ledger", "version": "1.0.0", "type": "extension", "main": "main.py",
             "sdkVersion": "1", "permissions": ["messages:send", "storage:use"], "sessions": ["*"],
             "hooks": ["message:received"]}
_LEDGER = '''
from plugbox.sdk import HookContext, Plugin


class Ledger(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook: HookContext):
        key = hook.data["body"]
        await self.ctx.storage.set(key, hook.session_id)
        await self.ctx.messages.send_text(hook.session_id, hook.data["chatId"], "ack " + key)
        return None
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ledger_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ledger/manifest.json", json.dumps(_MANIFEST))
        zf.writestr("ledger/main.py", _LEDGER)
    return buf.getvalue()


class _Host:
    """One `plugbox serve` process on its own directories and port."""

    def __init__(self, root: Path, name: str, url: str, sessions: list[str], port: int) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOX_")}
        env.update({"PLUGBOX_DATA_DIR": str(self.dir / "data"), "PLUGBOX_PLUGINS_DIR": str(self.dir / "plugins"),
                    "PLUGBOX_ADMIN_API_KEYS": ADMIN, "PLUGBOX_DATABASE_URL": url,
                    "PLUGBOX_LOOPBACK_SESSIONS": ",".join(sessions),
                    "PLUGBOX_CLUSTER_LEASE_INTERVAL_MS": str(_LEASE_INTERVAL_MS),
                    "PLUGBOX_FETCH_EXEMPT_HOSTS": "127.0.0.1"})  # the webhook receiver below
        self._log = open(self.dir / "serve.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from plugbox.cli import main; main()", "serve", "--port", str(port)],
            env=env, cwd=self.dir, stdout=self._log, stderr=subprocess.STDOUT)
        self.client = httpx.AsyncClient(base_url=self.url, headers=_HEADERS, timeout=30)

    async def ready(self, within_s: float = 60) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if (await self.client.get("/health", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        raise BenchError(f"host {self.name} did not come up; see {self.dir / 'serve.log'}")

    async def leased(self) -> set[str]:
        try:
            doc = (await self.client.get("/api/sessions", timeout=2)).json()
        except (httpx.HTTPError, ValueError):
            return set()
        return {s["id"] for s in doc["sessions"] if s.get("leased")}

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def stop(self) -> None:
        await self.client.aclose()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class _Receiver:
    """An HTTP server on loopback (a thread of its own) accepting webhook deliveries, counted per
    `webhook-id`."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        lock = threading.Lock()
        accepted = self.accepted

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                with lock:
                    accepted[self.headers.get("webhook-id", "")] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, name="bench-receiver", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


async def _subscribe(hosts: list[_Host], url: str) -> None:
    """One subscription to every handled message, known to every host before the load starts."""
    r = await hosts[0].client.post("/api/webhooks", json={"url": url, "events": ["message:received"]})
    if r.status_code != 201:
        raise BenchError(f"creating the webhook subscription failed: {r.text}")
    deadline = time.monotonic() + 10
    while not all([len((await h.client.get("/api/webhooks")).json()["webhooks"]) == 1 for h in hosts]):
        if time.monotonic() > deadline:
            raise BenchError("the webhook subscription did not reach every host within 10 s")
        await asyncio.sleep(0.1)


async def _webhooks(url: str, survivors: list[_Host], receiver: _Receiver, within_s: float = 60) -> dict[str, int]:
    """Once the queue drained (a dead host's claims lapse first): queued, accepted, duplicates, lost."""
    import psycopg

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        r = await survivors[0].client.get("/api/webhooks/deliveries", params={"state": "pending", "limit": 1})
        if r.status_code == 200 and not r.json()["deliveries"]:
            break
        await asyncio.sleep(0.25)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        queued = {str(i) for (i,) in await (await conn.execute("SELECT id FROM webhook_deliveries")).fetchall()}
    accepted = Counter(receiver.accepted)
    return {"queued": len(queued), "accepted": len(accepted), "duplicates": sum(accepted.values()) - len(accepted),
            "lost": len(queued - set(accepted))}


class _Load:
    """Injectors, one per session slot, each sending to its session's current lease holder."""

    def __init__(self, hosts: list[_Host], sessions: list[str]) -> None:
        self.hosts = hosts
        self.sessions = sessions
        self.owner: dict[str, _Host] = {}
        self.acked: dict[str, float] = {}  # key -> when its ack came back
        self.refused = 0
        self._stop = asyncio.Event()

    async def refresh_owners(self) -> None:
        owner: dict[str, _Host] = {}
        for host in self.hosts:
            if host.proc.poll() is None:
                for session in await host.leased():
                    owner[session] = host
        self.owner = owner

    async def _owners_loop(self) -> None:
        while not self._stop.is_set():
            await self.refresh_owners()
            await asyncio.sleep(0.2)

    async def _inject(self, session: str) -> None:
        while not self._stop.is_set():
            host = self.owner.get(session)
            if host is None or host.proc.poll() is not None:
                await asyncio.sleep(0.05)
                continue
            key = f"{session}-{uuid.uuid4().hex[:12]}"
            try:
                r = await host.client.post(f"/api/sessions/{session}/messages",
                                           json={"chatId": _CHAT, "body": key}, timeout=10)
                sent = r.json().get("sent", []) if r.status_code == 200 else []
            except (httpx.HTTPError, ValueError):
                sent = []
            if any(m.get("body") == f"ack {key}" for m in sent):
                self.acked[key] = time.monotonic()
            else:
                self.refused += 1  # not the holder any more, or the host died under the call
                await asyncio.sleep(0.05)

    async def run(self, seconds: float, clients_per_session: int) -> tuple[int, float]:
        """Run the load for `seconds`; return (acks, seconds) of this run."""
        self._stop.clear()
        before = len(self.acked)
        started = time.monotonic()
        tasks = [asyncio.create_task(self._owners_loop())]
        tasks += [asyncio.create_task(self._inject(s)) for s in self.sessions for _ in range(clients_per_session)]
        try:
            await asyncio.sleep(seconds)
        finally:
            self._stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        return len(self.acked) - before, time.monotonic() - started


async def _create_database(server_url: str) -> str:
    from urllib.parse import urlsplit

    import psycopg

    name = f"plugbox_bench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"'.encode())
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


async def _drop_database(server_url: str, url: str) -> None:
    from urllib.parse import urlsplit

    import psycopg

    name = urlsplit(url).path.lstrip("/")
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def _lost(url: str, acked: set[str]) -> int:
    from plugbox.storage.kv import PluginStorage
    from plugbox.storage.postgres import PostgresDatabase

    db = PostgresDatabase(url)
    try:
        stored = set(PluginStorage(db).list("ledger"))
    finally:
        db.close_sync()
    return len(acked - stored)


async def run_cluster(*, duration_s: float, progress: Progress, sessions: int = 12, hosts: int = 3,
                      clients_per_session: int = 2) -> dict[str, Any]:
    server = os.environ.get("PLUGBOX_DATABASE_URL", "")
    if not server.startswith(("postgresql://", "postgres://")):
        raise BenchError("--scenario cluster needs PLUGBOX_DATABASE_URL=postgresql://... (a server where the "
                         "role may create a database; the scenario makes its own and drops it)")
    phase_s = max(duration_s / 3, 2.0)
    names = [f"s{i:02d}" for i in range(sessions)]
    url = await _create_database(server)
    started: list[_Host] = []
    receiver = _Receiver()
    try:
        with tempfile.TemporaryDirectory(prefix="plugbox-bench-cluster-") as tmp:
            root = Path(tmp)
            progress("phase 1: one host")
            first = _Host(root, "h1", url, names, _free_port())
            started.append(first)
            await first.ready()
            upload = {"file": ("ledger.zip", _ledger_zip(), "application/zip")}
            r = await first.client.post("/api/plugins", files=upload)
            if r.status_code != 201:
                raise BenchError(f"installing the ledger plugin failed: {r.text}")
            await first.client.put("/api/plugins/ledger/sessions", json={"activeSessions": names})
            r = await first.client.post("/api/plugins/ledger/enable")
            if r.status_code != 200 or r.json().get("status") != "enabled":
                raise BenchError(f"enabling the ledger plugin failed: {r.text}")
            load = _Load([first], names)
            acks1, secs1 = await load.run(phase_s, clients_per_session)

            progress(f"phase 2: {hosts} hosts")
            for i in range(2, hosts + 1):
                host = _Host(root, f"h{i}", url, names, _free_port())
                started.append(host)
                await host.ready()
            load.hosts = list(started)
            spread_deadline = time.monotonic() + 20
            while time.monotonic() < spread_deadline:  # wait for the plugin everywhere and the leases to spread
                held = [len(await h.leased()) for h in started]
                statuses = [(await h.client.get("/api/plugins/ledger")).json().get("status") for h in started]
                if min(held) > 0 and sum(held) == sessions and set(statuses) == {"enabled"}:
                    break
                await asyncio.sleep(0.25)
            spread = {h.name: sorted(await h.leased()) for h in started}
            acksn, secsn = await load.run(phase_s, clients_per_session)

            progress("phase 3: SIGKILL the busiest host under load")
            await _subscribe(started, receiver.url)
            await load.refresh_owners()
            victim = max(started, key=lambda h: sum(1 for o in load.owner.values() if o is h))
            moved = [s for s, o in load.owner.items() if o is victim]
            running = asyncio.create_task(load.run(phase_s + 10, clients_per_session))
            await asyncio.sleep(min(2.0, phase_s / 2))
            killed_at = time.monotonic()
            victim.kill()
            await running
            # Failover: the kill to the first ack of each of the victim's sessions on a survivor; the
            # slowest session decides. A session never acknowledged again has not failed over.
            firsts = {s: min((t for k, t in load.acked.items() if k.startswith(f"{s}-") and t > killed_at),
                             default=None) for s in moved}
            recovered = [t - killed_at for t in firsts.values() if t is not None]
            failover = max(recovered) if moved and len(recovered) == len(moved) else None
            lost = await asyncio.to_thread(_lost, url, set(load.acked))
            webhooks = await _webhooks(url, [h for h in started if h is not victim], receiver)
        return {
            "bench": "plugbox",
            "scenario": "cluster",
            "hosts": hosts,
            "sessions": sessions,
            "clients": clients_per_session * sessions,
            "throughput": {
                "one_host_acks_per_s": round(acks1 / secs1, 1),
                f"{hosts}_hosts_acks_per_s": round(acksn / secsn, 1),
                "ratio": round((acksn / secsn) / (acks1 / secs1), 2) if acks1 else None,
            },
            "leases": {"spread": {k: len(v) for k, v in spread.items()}, "interval_ms": _LEASE_INTERVAL_MS},
            "failover": {
                "killed": victim.name,
                "sessions_moved": len(moved),
                "seconds": None if failover is None else round(failover, 2),
                "within_10_s": failover is not None and failover <= 10,
                "recovered_sessions": len(recovered),
            },
            "writes": {"acknowledged": len(load.acked), "lost_acknowledged": lost,
                       "refused_or_moved": load.refused},
            "webhooks": webhooks,
        }
    finally:
        for host in started:
            await host.stop()
        receiver.close()
        await _drop_database(server, url)
