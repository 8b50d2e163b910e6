"""Writes per second with many plugins holding data, under the host's storage total (`quota.Quota`:
every growing write reads N, the plugins holding data). Drives `PluginStorage` directly (no workers),
so the figure is the store's own cost: `plugins` plugins each hold one key, then `writes` growing
writes (a new small key each, plugins in turn, `lanes` writers at once) are timed, `rounds` times.

Run: `.venv/bin/python -m tests.bench.measure_storecounts [--dir DIR] [--url postgresql://...]
[--plugins 1000] [--writes 4000] [--rounds 3]`. `--dir` is where the SQLite file goes (default a
temporary directory; /dev/shm takes the fsync out of the figure, leaving the statements' CPU);
`--url` (a server the caller may create databases on) measures a new PostgreSQL database there
instead, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from plugbox.storage.db import Connection, Database
from plugbox.storage.kv import PluginStorage
from plugbox.storage.postgres import PostgresDatabase
from plugbox.storage.quota import Quota, WriteBudget
from plugbox.storage.sqlite import SqliteDatabase


async def _round(kv: PluginStorage, plugins: list[str], writes: int, lanes: int, start: int) -> float:
    async def lane(n: int) -> None:
        for i in range(n, writes, lanes):
            await kv.set(plugins[i % len(plugins)], f"w{start + i}", "x" * 40)

    began = time.perf_counter()
    await asyncio.gather(*(lane(n) for n in range(lanes)))
    return writes / (time.perf_counter() - began)


async def measure(db: Database, plugins: int, writes: int, rounds: int, lanes: int) -> list[float]:
    kv = PluginStorage(db, quota=Quota(1 << 30, 1 << 40), write_budget=WriteBudget(1 << 40, 1 << 40, 0.0))
    ids = [f"plugin-{n:04}" for n in range(plugins)]

    def seed(c: Connection) -> None:
        for p in ids:
            kv.quota.charge(c, p, 100, "seed")
            c.execute("INSERT INTO plugin_kv (plugin_id, key, value, size) VALUES (?, 'seed', ?, 100)", (p, b"\xc0"))

    await db.write(seed)
    await _round(kv, ids, min(writes, 500), lanes, -10**6)  # warm the caches
    return [await _round(kv, ids, writes, lanes, r * writes) for r in range(rounds)]


@contextmanager
def _new_database(server: str) -> Iterator[str]:
    name = f"plugbox_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield urllib.parse.urlsplit(server)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


async def _run(db: Database, args: argparse.Namespace) -> list[float]:
    try:
        return await measure(db, args.plugins, args.writes, args.rounds, args.lanes)
    finally:
        await db.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--url", default="")
    parser.add_argument("--plugins", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lanes", type=int, default=16)
    args = parser.parse_args()
    if args.url:
        with _new_database(args.url) as url:
            rates = await _run(PostgresDatabase(url), args)
    else:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            rates = await _run(SqliteDatabase(Path(tmp) / "bench.db"), args)
    where = "postgres" if args.url else f"sqlite in {args.dir or tempfile.gettempdir()}"
    print(f"{where}: {args.plugins} plugins holding data, {args.writes} growing writes x {args.rounds}, "
          f"{args.lanes} lanes: {' '.join(f'{r:.0f}' for r in rates)} writes/s "
          f"(median {statistics.median(rates):.0f})")


if __name__ == "__main__":
    asyncio.run(main())
