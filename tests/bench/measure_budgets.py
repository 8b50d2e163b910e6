"""Before/after figures for the host services a plugin can make the host spend (issue 12, classes
1, 2 and 8): storage write flood, storage.list scans, fetch slots, loopback engine memory, disk bytes
against the counted quota. Drives the host services directly (no workers), so each figure is the
service's own cost. Run: `.venv/bin/python -m tests.bench.measure_budgets [scenario ...]`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from plugbox.engines.loopback import LoopbackEngine
from plugbox.errors import CapabilityError, StorageError
from plugbox.net.allowlist import HostList
from plugbox.net.fetch import FetchPolicy, FetchService
from plugbox.settings import load_settings
from plugbox.storage.conversations import ConversationStore
from plugbox.storage.kv import PluginStorage
from plugbox.storage.sqlite import SqliteDatabase


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def write_flood(tmp: Path) -> None:
    db = SqliteDatabase(tmp / "flood.db")
    storage = PluginStorage(db, 1 << 30)

    async def victim(n: int) -> list[float]:
        out = []
        for i in range(n):
            t = time.perf_counter()
            await storage.set("victim", f"k{i % 10}", "x" * 100)
            out.append(time.perf_counter() - t)
            await asyncio.sleep(0.02)
        return out

    base = await victim(50)
    stop = asyncio.Event()
    refused = 0

    value = b"\0" * (1 << 20)  # made once: the attacker's own CPU is a worker's, not the host's

    async def writer(w: int) -> None:
        nonlocal refused
        i = 0
        while not stop.is_set():
            try:
                await storage.set("attacker", f"w{w}-{i % 4}", value)
            except (StorageError, CapabilityError, TimeoutError):
                refused += 1
                await asyncio.sleep(0.01)
            i += 1

    tasks = [asyncio.create_task(writer(w)) for w in range(32)]
    await asyncio.sleep(0.3)
    during = await victim(50)
    stop.set()
    await asyncio.gather(*tasks)
    print(f"write flood: victim set p50 {_p(base, .5):.1f} ms -> {_p(during, .5):.1f} ms during 32 x 1 MiB writers "
          f"(p95 {_p(during, .95):.1f} ms); attacker refusals {refused}")
    await db.close()


async def list_scan(tmp: Path) -> None:
    db = SqliteDatabase(tmp / "scan.db")
    storage = PluginStorage(db, 1 << 30)
    keys = 200_000

    def fill(c: Any) -> None:
        c.executemany("INSERT INTO plugin_kv (plugin_id, key, value, size) VALUES ('attacker', ?, x'c0', 10)",
                      ((f"k{i:07d}",) for i in range(keys)))

    await db.write(fill)
    for prefix in ("a", ""):
        t = time.perf_counter()
        try:
            lister = getattr(storage, "list_keys", None)  # the plugin-facing listing, once it exists
            result: Any = await lister("attacker", prefix) if lister else storage.list("attacker", prefix)
            got = f"{len(result)} keys"
        except (StorageError, CapabilityError) as exc:
            got = f"refused: {exc}"[:110]
        print(f"storage.list prefix {prefix!r} over {keys} keys: {1000 * (time.perf_counter() - t):.1f} ms, {got}")
    await db.close()


async def fetch_slots(tmp: Path) -> None:
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()
        writer.close()

    fast_srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    slow_srv = await asyncio.start_server(slow, "127.0.0.1", 0)
    fast_port = fast_srv.sockets[0].getsockname()[1]
    slow_port = slow_srv.sockets[0].getsockname()[1]
    settings = load_settings(environ={}, data_dir=str(tmp), fetch_exempt_hosts=("localhost",))
    fetch = FetchService(settings, lambda _pid: FetchPolicy(allow=HostList.parse(["localhost"])))
    refused = 0

    async def hog() -> None:
        nonlocal refused
        try:
            await fetch.fetch("attacker", f"http://localhost:{slow_port}/", timeout_ms=3000)
        except CapabilityError:
            refused += 1

    hogs = [asyncio.create_task(hog()) for _ in range(32)]
    await asyncio.sleep(0.5)
    t = time.perf_counter()
    try:
        await fetch.fetch("victim", f"http://localhost:{fast_port}/", timeout_ms=2000)
        victim = f"{1000 * (time.perf_counter() - t):.0f} ms, ok"
    except CapabilityError as exc:
        victim = f"{1000 * (time.perf_counter() - t):.0f} ms, failed: {type(exc).__name__}"
    print(f"fetch slots: attacker in flight {fetch.in_flight}, attacker refused {refused}/32; victim fetch {victim}")
    release.set()
    await asyncio.gather(*hogs)
    fast_srv.close()
    slow_srv.close()


async def engine_memory(tmp: Path) -> None:
    engine = LoopbackEngine()
    await engine.create_session("s")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(2000):
        await engine.send_text("s", f"c{i % 400}", "x" * 65536)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(f"loopback engine: 2000 sends of 64 K chars to 400 chats -> +{grown / 1e6:.0f} MB held")


def _disk(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _checkpoint(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def disk_ratio(tmp: Path) -> None:
    path = tmp / "disk.db"
    db = SqliteDatabase(path)
    storage = PluginStorage(db, 1 << 30)
    conversations = ConversationStore(db)
    _checkpoint(path)
    start = _disk(path)
    for label, count, value in (("small", 20_000, "v"), ("1100-byte", 2_000, "x" * 1100)):
        for i in range(count):
            await storage.set("p", f"{label}-{i}", value)
    _checkpoint(path)
    grown = _disk(path) - start
    print(f"disk: kv file growth {grown / 1e6:.2f} MB vs counted {storage.usage('p') / 1e6:.2f} MB "
          f"(ratio {grown / max(1, storage.usage('p')):.2f})")
    start, counted = _disk(path), storage.usage("p")
    envelope = {"conversationId": "c", "sessionId": "s", "chatId": "chat", "text": "t" * 60_000}
    for _ in range(300):
        await conversations.record_sent("p", envelope, "m")
    _checkpoint(path)
    print(f"disk: 300 conversation records grew the file {(_disk(path) - start) / 1e6:.2f} MB, counted "
          f"{(storage.usage('p') - counted) / 1e6:.2f} MB")
    await db.close()


SCENARIOS = {"flood": write_flood, "list": list_scan, "fetch": fetch_slots, "engine": engine_memory,
             "disk": disk_ratio}


async def main(names: list[str]) -> None:
    for name in names or list(SCENARIOS):
        with tempfile.TemporaryDirectory() as tmp:
            await SCENARIOS[name](Path(tmp))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
