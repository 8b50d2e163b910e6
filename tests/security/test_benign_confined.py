"""Benign plugins keep working under full confinement: what an ordinary plugin does — stdlib
imports, threads, asyncio, temp files in its scratch dir, SQLite in memory, time zones,
randomness, hashing, dates — succeeds in a real strictly confined worker."""

from __future__ import annotations

import sys
import textwrap

import pytest

from plugbox.lifecycle import Status

from .conftest import SESSION, Attack, WritePlugin, enable

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(60)]

CHECKS = {
    "stdlib_imports": """
        import collections, csv, dataclasses, decimal, email, enum, fractions, functools, gzip, html, http.client
        import io, itertools, json, logging, math, re, statistics, string, textwrap, typing, unicodedata, urllib.parse
        import uuid, xml.etree.ElementTree, zlib
        assert json.loads(json.dumps({"a": [1, 2]})) == {"a": [1, 2]}
        assert re.fullmatch(r"a+b", "aaab")
        assert decimal.Decimal("0.1") + decimal.Decimal("0.2") == decimal.Decimal("0.3")
        return "ok"
    """,
    "zoneinfo": """
        import datetime, zoneinfo
        paris = zoneinfo.ZoneInfo("Europe/Paris")
        when = datetime.datetime(2026, 7, 1, 12, tzinfo=paris)
        assert when.utcoffset() == datetime.timedelta(hours=2)
        return str(when)
    """,
    "sqlite_memory": """
        import sqlite3
        db = sqlite3.connect(":memory:")
        db.execute("create table t (x)")
        db.executemany("insert into t values (?)", [(i,) for i in range(100)])
        return db.execute("select sum(x) from t").fetchone()[0]
    """,
    "tempfile_in_scratch": """
        import tempfile
        with tempfile.NamedTemporaryFile("w+", delete=True) as f:
            f.write("hello")
            f.flush()
            f.seek(0)
            assert f.read() == "hello"
            assert f.name.startswith(os.getcwd())
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "x.txt"), "w") as g:
                g.write("x")
            assert os.listdir(d) == ["x.txt"]
        return "ok"
    """,
    "threads": """
        import threading
        results = []
        lock = threading.Lock()
        def work(i):
            with lock:
                results.append(sum(range(i * 1000)))
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(results)
    """,
    "thread_pool": """
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return sum(pool.map(lambda x: x * x, range(100)))
    """,
    "asyncio_gather": """
        async def one(i):
            await asyncio.sleep(0.01)
            return i
        return sum(await asyncio.gather(*(one(i) for i in range(50))))
    """,
    "asyncio_to_thread": """
        return await asyncio.to_thread(lambda: 42)
    """,
    "randomness": """
        import random, secrets
        assert len(secrets.token_hex(16)) == 32
        assert len(os.urandom(16)) == 16
        return random.SystemRandom().randint(1, 6)
    """,
    "hashing": """
        import hashlib, hmac
        assert hashlib.sha256(b"x").hexdigest().startswith("2d711642")
        return hmac.new(b"k", b"m", "sha256").hexdigest()
    """,
    "datetime": """
        import datetime, time
        now = datetime.datetime.now(datetime.timezone.utc)
        assert abs(now.timestamp() - time.time()) < 5
        return now.isoformat()
    """,
    "read_own_package": """
        here = os.path.dirname(__file__)
        with open(os.path.join(here, "manifest.json")) as f:
            return json.load(f)["id"]
    """,
    "capabilities": """
        await ctx.storage.set("k", {"n": 1})
        assert await ctx.storage.get("k") == {"n": 1}
        await ctx.messages.send_text("s1", "c1", "hello")
        ctx.logger.info("benign log line")
        return "ok"
    """,
}


@pytest.mark.parametrize("check", sorted(CHECKS))
async def test_benign_work_succeeds_under_full_confinement(attack: Attack, check: str) -> None:
    code = "async def attack(ctx, cfg):\n" + textwrap.indent(textwrap.dedent(CHECKS[check]), "    ")
    run = await attack.run(code, id="benign-" + check.replace("_", "-"),
                           permissions=["storage:use", "messages:send"])
    assert run.result["ok"] is True, run.result
    applied = {layer["name"] for layer in run.entry.confinement or [] if layer["applied"]}
    assert {"session", "fds", "env", "rlimits", "credentials", "nnp", "landlock", "seccomp"} <= applied
    assert run.entry.status == Status.ENABLED
    await attack.aftermath()


async def test_benign_echo_round_trip_under_full_confinement(attack: Attack, write_plugin: WritePlugin) -> None:
    entry = await enable(attack.host, write_plugin("""
        import asyncio, zoneinfo, datetime
        from plugbox.sdk import Plugin
        class Echo(Plugin):
            async def on_load(self, ctx):
                ctx.register_hook("message:received", self.on_message)
            async def on_message(self, hook):
                when = hook.timestamp.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
                await asyncio.sleep(0)
                await self.ctx.messages.send_text(hook.session_id, hook.data["chatId"],
                                                  f"echo: {hook.data['body']} ({when.tzname()})")
    """, id="echo"))
    assert entry.status == Status.ENABLED
    await attack.host.inject_inbound(SESSION, "15550001111@c.us", "hi")
    assert [m["body"] for m in attack.host.engine.sent] == ["echo: hi (JST)"]
    await attack.aftermath()
