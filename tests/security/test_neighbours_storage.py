"""Noisy neighbours on the host services a plugin can make the host spend (issue 12): the database
writer, storage listings, the storage quota, fetch slots and the loopback engine's memory.

Each test runs a real hostile plugin in a confined worker beside a real victim plugin, probes the
victim before and during the attack, and asserts: the attack ran and was refused or limited, the
victim kept its service (every probe succeeded, p50 within 3x its baseline or 50 ms), the host
survived (`aftermath`), and the ATTACKER — never the victim — was the one charged.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from plugbox.lifecycle import Status

from .conftest import CARRY, SESSION, Attack, carrying, enable, reported

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(120)]

# Probes carry their answer back in webhook:before's free-form payload.data (hooks:modify lets it
# through); `plugin=` keeps each probe to its own plugin's handlers.
VICTIM = CARRY + """
from plugbox.sdk import Plugin

class Victim(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("webhook:before", self.probe)

    async def probe(self, hook):
        n = (await self.ctx.storage.get("n", 0)) + 1
        await self.ctx.storage.set("n", n)
        return carry(hook, {"id": "m1", "n": n})
"""


def _fire(attack: Attack, plugin_id: str, value: dict[str, Any]) -> Any:
    """One webhook:before dispatch to `plugin_id`'s handlers only, carrying `value`."""
    return attack.host.bus.execute("webhook:before", carrying(value), SESSION, plugin=plugin_id)


class Victim:
    def __init__(self, attack: Attack) -> None:
        self.attack = attack
        self.failures: list[Any] = []

    async def probe(self) -> float:
        started = time.perf_counter()
        outcome = await _fire(self.attack, "victim", {"id": "m1"})
        if outcome.errors or outcome.timed_out or not isinstance(reported(outcome).get("n"), int):
            self.failures.append(outcome)
        return time.perf_counter() - started

    async def p50(self, probes: int = 15) -> float:
        times = []
        for _ in range(probes):
            times.append(await self.probe())
            await asyncio.sleep(0.02)
        return statistics.median(times)


@pytest.fixture
async def victim(attack: Attack) -> AsyncIterator[Victim]:
    entry = await enable(attack.host, attack.write_plugin(VICTIM, id="victim",
                                                         permissions=["storage:use", "hooks:modify"]))
    assert entry.status == Status.ENABLED, entry.error
    yield Victim(attack)
    assert entry.status == Status.ENABLED  # the victim was never stopped on the attacker's account


async def _during(attack: Attack, victim: Victim, code: str, cfg: dict[str, Any], **kw: Any) -> tuple[Any, float]:
    """Run the attack in a hook of the hostile plugin while the victim is probed; returns the
    attack's own account of what it got and the victim's p50 during it."""
    entry = await enable(attack.host, attack.plugin(code, cfg, in_enable=False, **kw))
    assert entry.status == Status.ENABLED, entry.error
    running = asyncio.ensure_future(_fire(attack, "hostile", {"id": "m1"}))
    await asyncio.sleep(0.3)  # the flood is under way
    p50 = await victim.p50()
    outcome = await running
    attack.hook_outcomes.append(outcome)
    assert not outcome.timed_out, outcome
    result = reported(outcome)["outcome"]
    assert result["ran"] is True and result["ok"] is True, result
    return result["value"], p50


def _assert_victim_served(victim: Victim, baseline: float, during: float) -> None:
    assert victim.failures == [], victim.failures
    assert during <= max(3 * baseline, 0.050), f"victim p50 {baseline * 1000:.1f} -> {during * 1000:.1f} ms"


FLOOD = """
import time
from plugbox.sdk import CapabilityError

async def attack(ctx, cfg):
    value = b"\\0" * cfg["size"]
    counts = {"ok": 0, "refused": 0, "errors": []}
    deadline = time.monotonic() + cfg["seconds"]

    async def writer(n):
        i = 0
        while time.monotonic() < deadline:
            try:
                await ctx.storage.set(f"w{n}-{i % 4}", value)
                counts["ok"] += 1
            except CapabilityError as exc:
                counts["refused"] += 1
                if len(counts["errors"]) < 2:
                    counts["errors"].append(str(exc)[:300])
                await asyncio.sleep(0.05)
            i += 1

    await asyncio.gather(*(writer(n) for n in range(cfg["writers"])))
    return counts
"""


@pytest.mark.parametrize("settings_overrides", [{
    "hook_budget_ms": 10000, "storage_write_bytes_per_s": 2 << 20, "storage_write_burst_bytes": 4 << 20,
    "storage_write_max_wait_ms": 500}])
async def test_a_write_flood_is_throttled_to_the_attackers_budget_and_the_neighbour_keeps_writing(
    attack: Attack, victim: Victim
) -> None:
    baseline = await victim.p50()
    counts, during = await _during(attack, victim, FLOOD, {"size": 512 << 10, "writers": 16, "seconds": 2.0})
    assert counts["refused"] > 0 and "write budget of plugin 'hostile'" in counts["errors"][0], counts
    assert counts["ok"] * (512 << 10) <= (4 << 20) + 3 * (2 << 20) + (2 << 20)  # burst + 3 s of rate
    budget = attack.host.storage.write_budget
    assert budget.refused.get("hostile", 0) == counts["refused"]
    assert "victim" not in budget.refused and budget.waited_s.get("victim", 0) == 0
    _assert_victim_served(victim, baseline, during)
    await attack.aftermath()


SCAN = """
from plugbox.sdk import CapabilityError

async def attack(ctx, cfg):
    refused, errors, pages = 0, [], 0
    for _ in range(cfg["rounds"]):
        results = await asyncio.gather(*(ctx.storage.list("") for _ in range(16)), return_exceptions=True)
        for r in results:
            if isinstance(r, CapabilityError):
                refused += 1
                errors = errors or [str(r)[:300]]
        pages += len(await ctx.storage.list("k", after="k0010000", limit=500))
    narrow = await ctx.storage.list("zz")  # a prefix past every key costs nothing
    return {"refused": refused, "errors": errors, "page": pages, "narrow": narrow}
"""


@pytest.mark.parametrize("settings_overrides", [{"hook_budget_ms": 20000}])
async def test_listing_a_huge_namespace_is_capped_off_the_loop_and_the_neighbour_is_unaffected(
    attack: Attack, victim: Victim
) -> None:
    keys = 150_000
    await attack.host.db.write(lambda c: c.executemany(
        "INSERT INTO plugin_kv (plugin_id, key, value, size) VALUES ('hostile', ?, x'c0', 10)",
        ((f"k{i:07d}",) for i in range(keys))))
    baseline = await victim.p50()
    result, during = await _during(attack, victim, SCAN, {"rounds": 6})
    assert result["refused"] == 6 * 16, result
    assert "more than 10000 keys" in result["errors"][0] and "storage_list_max_keys" in result["errors"][0]
    assert result["page"] == 6 * 500 and result["narrow"] == []
    _assert_victim_served(victim, baseline, during)
    await attack.aftermath()


CONVERSATIONS = """
from plugbox.sdk import CapabilityError

async def attack(ctx, cfg):
    sent, refused, errors = 0, 0, []
    for i in range(cfg["count"]):
        envelope = {"conversationId": f"c{i}", "sessionId": cfg["session"], "chatId": f"chat{i % 50}",
                    "text": "t" * 60000}
        try:
            await ctx.conversations.send(envelope)
            sent += 1
        except CapabilityError as exc:
            refused += 1
            errors = errors or [str(exc)[:300]]
            break
    return {"sent": sent, "refused": refused, "errors": errors}
"""


@pytest.mark.parametrize("settings_overrides", [{"storage_quota_bytes": 2 << 20, "hook_budget_ms": 20000}])
async def test_conversation_records_count_against_the_storage_quota(attack: Attack, victim: Victim) -> None:
    result, _ = await _during(attack, victim, CONVERSATIONS, {"count": 200, "session": SESSION},
                              permissions=["storage:use", "conversation:send", "messages:send"])
    assert result["refused"] == 1 and "storage quota of plugin 'hostile'" in result["errors"][0], result
    host = attack.host
    assert 0 < result["sent"] < 40  # 60 KB records in a 2 MiB quota, not 200 of them
    assert host.storage.usage("hostile") <= 2 << 20
    assert len(host.engine.sent) == result["sent"]  # the refused record was never sent either
    assert victim.failures == []
    await attack.aftermath()


FETCH_HOG = """
from plugbox.sdk import CapabilityError

async def attack(ctx, cfg):
    url = f"http://localhost:{cfg['port']}/hold"
    results = await asyncio.gather(*(ctx.net.fetch(url, timeout_ms=20000) for _ in range(16)),
                                   return_exceptions=True)
    refused = [str(r)[:300] for r in results if isinstance(r, CapabilityError)]
    return {"refused": len(refused), "errors": refused[:1], "ok": sum(isinstance(r, dict) for r in results)}
"""


class HoldServer:
    """Answers /hold only once released, anything else at once; counts what it holds."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.more_held = asyncio.Event()
        self.held = 0
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if b" /hold " in head:
                self.held += 1
                self.more_held.set()
                await self.release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def hold_server() -> AsyncIterator[HoldServer]:
    server = HoldServer()
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    yield server
    server.release.set()
    listening.close()
    await listening.wait_closed()


FETCH_VICTIM = CARRY + """
from plugbox.sdk import Plugin

class FetchVictim(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("webhook:before", self.probe)

    async def probe(self, hook):
        response = await self.ctx.net.fetch(hook.data["payload"]["data"]["url"], timeout_ms=5000)
        return carry(hook, {"id": "m1", "status": response["status"]})
"""


@pytest.mark.parametrize("settings_overrides", [{"fetch_exempt_hosts": ("localhost",), "hook_budget_ms": 20000}])
async def test_one_plugin_cannot_hold_every_fetch_slot(attack: Attack, hold_server: HoldServer) -> None:
    host = attack.host
    net = {"allow": ["localhost"]}
    victim = await enable(host, attack.write_plugin(FETCH_VICTIM, id="fetcher",
                                                    permissions=["net:fetch", "hooks:modify"], net=net))
    assert victim.status == Status.ENABLED, victim.error
    entry = await enable(host, attack.plugin(FETCH_HOG, {"port": hold_server.port}, in_enable=False,
                                             permissions=["storage:use", "net:fetch"], net=net))
    assert entry.status == Status.ENABLED, entry.error
    hog = asyncio.ensure_future(_fire(attack, "hostile", {"id": "m1"}))
    share = host.settings.fetch_max_in_flight_per_plugin
    async with asyncio.timeout(10):
        while hold_server.held < share:
            await hold_server.more_held.wait()
            hold_server.more_held.clear()
    probe = await _fire(attack, "fetcher", {"id": "m1", "url": f"http://localhost:{hold_server.port}/"})
    assert reported(probe).get("status") == 200 and not probe.errors, probe  # the neighbour still fetches
    assert host.fetch.in_flight_of("hostile") == share and hold_server.held == share
    hold_server.release.set()
    outcome = await hog
    result = reported(outcome)["outcome"]["value"]
    assert result["refused"] == 16 - share and result["ok"] == share, result
    assert "fetch_max_in_flight_per_plugin" in result["errors"][0]
    await attack.aftermath()


ENGINE_FLOOD = """
async def attack(ctx, cfg):
    for i in range(cfg["sends"]):
        await ctx.messages.send_text(cfg["session"], f"chat{i}", "x" * 65536)
    return cfg["sends"]
"""


# The engine's memory is what is measured here, not the send rate (test_neighbours_engine_sends.py): the
# flood is let through at its own pace.
@pytest.mark.parametrize("settings_overrides", [{"messages_sends_per_s_per_plugin": 100_000,
                                                 "messages_sends_burst_per_plugin": 100_000}])
async def test_sending_large_texts_to_many_chats_keeps_the_engine_within_its_memory(attack: Attack) -> None:
    engine = attack.host.engine
    engine.memory.total_bytes = 4 << 20  # the operator's bound (loopback_history_bytes), small here
    _run, outcome = await attack.run_in_hook(ENGINE_FLOOD, {"sends": 300, "session": SESSION},
                                             permissions=["storage:use", "messages:send"])
    assert reported(outcome)["outcome"].get("value") == 300, outcome.data  # every send was served
    assert engine.memory.bytes <= 4 << 20  # 300 x 64 K chars = 19 MB sent, at most 4 MiB held
    assert engine.sent and engine.max_sent_bytes >= sum(len(m["body"]) for m in engine.sent)
    chats = {c["id"] for c in await engine.get_chats(SESSION)}
    assert "chat299" in chats and "chat0" not in chats and len(chats) < 100  # the oldest were dropped
    await attack.aftermath()


async def test_storing_an_int_past_64_bits_is_a_capability_error_naming_the_value(attack: Attack) -> None:
    run = await attack.run("""
        from plugbox.sdk import CapabilityError
        async def attack(ctx, cfg):
            try:
                await ctx.storage.set("big", 2 ** 70)
            except CapabilityError as exc:  # not a bare OverflowError from the frame encoder
                return str(exc)
    """)
    assert "args.value: int outside the 64-bit range" in run.result["value"], run.result
    assert run.entry_storage("big") == (False, None)
    assert run.entry.status == Status.ENABLED
    await attack.aftermath()


LISTING_VICTIM = CARRY + """
from plugbox.sdk import Plugin

class ListingVictim(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("webhook:before", self.probe)

    async def probe(self, hook):
        return carry(hook, {"id": "m1", "n": len(await self.ctx.storage.list("v"))})
"""

LIST_FLOOD = """
import time

async def attack(ctx, cfg):
    deadline = time.monotonic() + cfg["seconds"]
    listed = 0

    async def lane():
        nonlocal listed
        while time.monotonic() < deadline:
            listed += len(await ctx.storage.list("k", limit=10000))

    await asyncio.gather(*(lane() for _ in range(cfg["lanes"])))
    return listed
"""


class Lister(Victim):
    def __init__(self, attack: Attack) -> None:
        super().__init__(attack)
        self.flood_waiting: list[int] = []  # the hostile plugin's listings waiting as each probe began

    async def probe(self) -> float:
        self.flood_waiting.append(self.attack.host.db._scan_turns.waiting("hostile"))  # type: ignore[attr-defined]
        started = time.perf_counter()
        outcome = await _fire(self.attack, "victim", {"id": "m1"})
        if outcome.errors or outcome.timed_out or reported(outcome).get("n") != 0:
            self.failures.append(outcome)
        return time.perf_counter() - started


@pytest.mark.parametrize("settings_overrides", [{"hook_budget_ms": 20000}])
async def test_a_listing_flood_takes_turns_with_a_neighbours_listing(attack: Attack) -> None:
    """Listings run on one scan thread, each costing what the lister stored: a plugin keeping 24
    large listings in flight makes a neighbour's small listing wait for one of them, not for all."""
    host = attack.host
    await host.db.write(lambda c: c.executemany(
        "INSERT INTO plugin_kv (plugin_id, key, value, size) VALUES ('hostile', ?, x'c0', 10)",
        ((f"k{i:07d}",) for i in range(60_000))))
    entry = await enable(host, attack.write_plugin(LISTING_VICTIM, id="victim",
                                                   permissions=["storage:use", "hooks:modify"]))
    assert entry.status == Status.ENABLED, entry.error
    victim = Lister(attack)
    baseline = await victim.p50()
    victim.flood_waiting.clear()
    result, during = await _during(attack, victim, LIST_FLOOD, {"seconds": 3.0, "lanes": 24})
    # The attack ran: full pages were listed, and the victim's listings were made while the flood's
    # waited on the scan thread, several at once. (How many pages the flood gets through depends on
    # the machine: its own CPU share throttles it, calls still running included.)
    probes = victim.flood_waiting
    print(f"\nlisting flood: {result} keys listed; its listings waiting at each victim probe: {probes}")
    assert result >= 2 * 10000, result
    assert max(probes) >= 12 and sum(1 for n in probes if n >= 4) >= len(probes) // 2, probes
    _assert_victim_served(victim, baseline, during)
    await attack.aftermath()
