"""Neighbours on the Cloud API engine: plugins flooding slow sends must not starve another plugin's
sends, and a plugin's send rate is its own.

The Cloud API engine sends every plugin's messages through one httpx client, a pool of 100
connections, each held until the Graph API answers or `cloudapi_timeout_ms` passes. Four real,
confined flooders keep 32 sends each in flight (their `max_calls_in_flight`) to recipients the
Graph API here answers only after 30 s, so every one of them holds its connection for the whole
timeout. Before `engine_calls_in_flight(_per_plugin)` they took the pool between them (128 wanted
of 100) and a victim's send, to a recipient answered at once, queued for a connection behind them
for seconds (measured: 4.5 s; with a longer Graph delay than here, it failed at the pool timeout).
Now each flooder holds at most 8 slots and waits behind its own, and the victim's send goes out at
once: the companion test shows the same flood starving it with the slots set out of reach.

The Graph API is served here from the test's own loop (a few lines of HTTP/1.1), so the engine's
real transport and its real connection pool are what is measured.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from plugbox.capabilities.messages import SendLimits
from plugbox.engines.cloudapi import CloudApiEngine
from plugbox.host import Host
from plugbox.lifecycle import Status
from plugbox.lifecycle.entry import PluginEntry
from tests.fake_graph import fixture
from tests.integration.conftest import CARRY, carrying, enable, host_settings
from tests.security.conftest import WritePlugin, reported

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(180)]

PNID = "106540352242922"
FLOODERS = 4
SLOW_PREFIX = "1555"  # recipients the Graph API answers late (the flooders'); any other, at once
GRAPH_DELAY_S = 30.0
TIMEOUT_MS = 6000  # cloudapi_timeout_ms: a flooder's send holds its connection this long
PROMPT_S = 1.0  # the victim's send, with a Graph API that answers it at once (it takes ~10 ms)

FLOOD = """
import asyncio
from plugbox.sdk import Plugin

class Flood(Plugin):
    async def on_enable(self, ctx):
        self.tasks = [asyncio.ensure_future(self.lane(n)) for n in range(32)]

    async def lane(self, n):
        while True:
            try:
                await self.ctx.messages.send_text("%(pnid)s", "%(prefix)s%(id)s%(n)s@c.us" %% n, "spam")
            except Exception:
                await asyncio.sleep(0.01)
"""

VICTIM = CARRY + """
import time
from plugbox.sdk import Plugin

class Victim(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("webhook:before", self.probe)

    async def probe(self, hook):
        cfg = hook.data["payload"]["data"]
        timings = []
        for i in range(cfg["count"]):
            started = time.monotonic()
            try:
                await self.ctx.messages.send_text(cfg["session"], "16660000001@c.us", f"hello {i}")
                error = None
            except Exception as exc:
                error = str(exc)
            timings.append({"s": time.monotonic() - started, "error": error})
        return carry(hook, {"timings": timings})
"""


@dataclass
class Graph:
    """Meta's send endpoint: the documented 200, late for SLOW_PREFIX recipients."""

    url: str = ""
    in_flight: int = 0
    peak: int = 0
    answered: dict[str, int] = field(default_factory=dict)  # recipient prefix -> answers sent
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                to = json.loads(await reader.readexactly(length))["to"]
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                try:
                    if to.startswith(SLOW_PREFIX):  # late; a client that gives up closes: no longer in flight
                        gone = asyncio.ensure_future(reader.read(1))
                        try:
                            if (await asyncio.wait([gone], timeout=GRAPH_DELAY_S))[0]:
                                return
                        finally:
                            gone.cancel()
                finally:
                    self.in_flight -= 1
                body = fixture("send_response.json")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                self.answered[to[:4]] = self.answered.get(to[:4], 0) + 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client gave up, or the test is over (the fixture cancels what is left)
        finally:
            writer.close()
            self.handlers.discard(task)


@pytest.fixture
async def graph() -> AsyncIterator[Graph]:
    g = Graph()
    server = await asyncio.start_server(g.serve, "127.0.0.1", 0, backlog=512)
    g.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield g
    finally:
        server.close()
        for task in list(g.handlers):
            task.cancel()
        await asyncio.gather(*g.handlers, return_exceptions=True)


@pytest.fixture
async def host(tmp_path: Path, graph: Graph, settings_overrides: dict[str, Any]) -> AsyncIterator[Host]:
    """A host on the Cloud API engine, with its default transport (and pool) against `graph`."""
    engine = CloudApiEngine(access_token="token", phone_number_ids=(PNID,), base_url=graph.url,
                            timeout_ms=TIMEOUT_MS)
    settings = host_settings(tmp_path, hook_budget_ms=60000, cloudapi_timeout_ms=TIMEOUT_MS, **settings_overrides)
    h = Host(settings, engine=engine, bundled=False)
    await h.start(restore=False)
    try:
        yield h
    finally:
        await h.stop()


async def _enable(host: Host, write: WritePlugin, code: str, plugin_id: str) -> PluginEntry:
    entry = await enable(host, write(code, id=plugin_id, permissions=["messages:send", "storage:use", "hooks:modify"]),
                         sessions=(PNID,))
    assert entry.status == Status.ENABLED, entry.error
    return entry


async def _flood(host: Host, write: WritePlugin, graph: Graph, in_flight: int) -> list[PluginEntry]:
    flooders = [await _enable(host, write, FLOOD % {"pnid": PNID, "prefix": SLOW_PREFIX, "id": n, "n": "%05d"},
                              f"flood-{n}") for n in range(FLOODERS)]
    deadline = time.monotonic() + 10
    while graph.in_flight < in_flight:  # the flood holds what it can get
        assert time.monotonic() < deadline, f"the flood reached only {graph.in_flight} sends in flight"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    return flooders


async def _victim_sends(host: Host, count: int) -> list[dict[str, Any]]:
    outcome = await host.bus.execute("webhook:before", carrying({"count": count, "session": PNID}, PNID), PNID,
                                     plugin="victim")
    assert not outcome.errors and not outcome.timed_out, outcome
    timings: list[dict[str, Any]] = reported(outcome)["timings"]
    return timings


def _limits(host: Host) -> SendLimits:
    assert host.messages.limits is not None
    return host.messages.limits


async def test_plugins_flooding_slow_sends_do_not_starve_a_neighbours_send(
        host: Host, graph: Graph, write_plugin: WritePlugin) -> None:
    victim = await _enable(host, write_plugin, VICTIM, "victim")
    assert all(t["error"] is None for t in await _victim_sends(host, 1))  # warm: the victim's worker and a connection
    slots = _limits(host).slots
    assert (slots.total, slots.per_plugin) == (32, 8)  # the defaults
    flooders = await _flood(host, write_plugin, graph, in_flight=FLOODERS * 8)

    timings = await _victim_sends(host, 3)
    print(f"\nvictim's sends beside the flood: {[round(t['s'], 3) for t in timings]} s; "
          f"graph peak {graph.peak}, slots peak {slots.peak_in_flight}, waited {dict(slots.waited)}")
    # The attack failed: every send of the victim went out, promptly, and reached the Graph API.
    assert all(t["error"] is None and t["s"] < PROMPT_S for t in timings), timings
    assert graph.answered.get("1666", 0) == 4
    # Charged to the flooders: each held its 8 slots and the rest of its sends waited behind its own;
    # the victim never waited. The host held no more than its ceiling, far from the pool's 100.
    assert set(slots.waited) == {f.plugin_id for f in flooders}
    assert slots.peak_in_flight <= 2 * slots.total and graph.peak <= 2 * slots.total
    # The host survived: every plugin still enabled, the bus still dispatching.
    assert all(f.status == Status.ENABLED for f in [*flooders, victim])
    started = time.monotonic()
    await host.dispatch("session:ready", {}, PNID)
    assert time.monotonic() - started < 1
    assert host.zygote.alive


@pytest.mark.parametrize("settings_overrides", [{"engine_calls_in_flight": 10000,
                                                 "engine_calls_in_flight_per_plugin": 10000}])
async def test_without_engine_slots_the_same_flood_starves_the_neighbours_send(
        host: Host, graph: Graph, write_plugin: WritePlugin) -> None:
    """The test above is not vacuous: with the slots set out of reach, the flood takes the engine's
    pool of 100 connections and the victim's send waits for one."""
    await _enable(host, write_plugin, VICTIM, "victim")
    assert all(t["error"] is None for t in await _victim_sends(host, 1))
    await _flood(host, write_plugin, graph, in_flight=100)
    [timing] = await _victim_sends(host, 1)
    print(f"\nwithout slots, the victim's send: {timing}; graph peak {graph.peak}")
    assert graph.peak == 100  # the pool, full
    assert timing["error"] is not None or timing["s"] > 3 * PROMPT_S, timing


RATE_FLOOD = """
import asyncio
from plugbox.sdk import Plugin

class Flood(Plugin):
    async def on_enable(self, ctx):
        self.told = False
        self.tasks = [asyncio.ensure_future(self.lane(n)) for n in range(32)]  # its max_calls_in_flight

    async def lane(self, n):
        while True:
            try:
                await self.ctx.messages.send_text("%(pnid)s", "16660000009@c.us", "spam")
            except Exception as exc:
                if not self.told:  # what the plugin was told, once, where the test can read it
                    self.told = True
                    await self.ctx.storage.set("refused", str(exc))
                await asyncio.sleep(0)
"""


@pytest.mark.parametrize("settings_overrides", [{"messages_sends_per_s_per_plugin": 20,
                                                 "messages_sends_burst_per_plugin": 40}])
async def test_a_plugin_sending_as_fast_as_replies_come_is_held_to_its_rate_and_a_neighbour_still_sends(
        host: Host, graph: Graph, write_plugin: WritePlugin) -> None:
    victim = await _enable(host, write_plugin, VICTIM, "victim")
    flooder = await _enable(host, write_plugin, RATE_FLOOD % {"pnid": PNID}, "rate-flood")
    started = time.monotonic()
    await asyncio.sleep(2.0)
    timings = await _victim_sends(host, 5)
    elapsed = time.monotonic() - started
    limits = _limits(host)
    sent = graph.answered.get("1666", 0) - 5  # the flood's (the victim's recipient prefix is the same)
    print(f"\nrate flood: {sent} sends in {elapsed:.2f} s, refused {dict(limits.rate_refused)}, "
          f"waited {dict(limits.rate_waited)}; victim {[round(t['s'], 3) for t in timings]} s")
    # Held to its rate: the burst, then 20 a second (plus the sends still waiting their turn).
    assert sent <= 40 + 20 * elapsed + 8, (sent, elapsed)
    assert sent >= 20 * (elapsed - 1)  # it was paced, not stopped
    # Charged to the flooder: refused, naming the setting; the victim neither waited nor was refused.
    assert limits.rate_refused["rate-flood"] > 0
    found, told = host.storage.get("rate-flood", "refused")
    assert found and "messages_sends_per_s_per_plugin (20/s, burst 40)" in told, told
    assert "rate-flood" in limits.rate_waited
    assert "victim" not in limits.rate_refused and "victim" not in limits.rate_waited
    assert all(t["error"] is None and t["s"] < PROMPT_S for t in timings), timings
    assert flooder.status == Status.ENABLED and victim.status == Status.ENABLED
