"""Issue 12, class 3: a hook chain no plugin can stall for others. A hostile plugin registers as
many slow handlers as it can on the event a victim plugin serves; the victim keeps its latency and
its standing, and the host charges the attacker (refused registrations, dropped events, timeouts).
Real confined workers on both sides."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from plugbox.host import Host
from tests.security.conftest import SESSION, WritePlugin, enable, wait_for

EVENT = "message:received"
CHAT = "15550001111@c.us"
PROBE_TIMEOUT_S = 5.0

VICTIM = """
from plugbox.sdk import Plugin


class Victim(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:received", self.seen, priority=50)

    async def seen(self, hook):
        await self.ctx.storage.set("seen", hook.data["body"])
"""

# 50 handlers before the victim's, each sleeping just under the handler budget (90 % of it).
STALL = """
import asyncio
from plugbox.sdk import Plugin, HookResult


class Stall(Plugin):
    def on_load(self, ctx):
        for _ in range(50):
            ctx.register_hook("message:received", self.slow, priority=1)

    async def slow(self, hook):
        await asyncio.sleep(self.ctx.config.get("sleepS", 1.8))
        return HookResult(data={**hook.data, "body": "stalled"}, stop=True)
"""

# The same in the chain (it holds `hooks:modify`), continuing each time so every handler runs.
STALL_IN_CHAIN = STALL.replace('return HookResult(data={**hook.data, "body": "stalled"}, stop=True)', "return None")


async def _probe(host: Host, label: str) -> float:
    """Seconds from an inbound message to the victim having stored it (it only observes, so the
    engine does not wait for it: the store is the proof it ran)."""
    start = time.perf_counter()
    await host.engine.inject_inbound(SESSION, CHAT, label)
    while time.perf_counter() - start < PROBE_TIMEOUT_S:
        found, value = host.storage.get("victim", "seen")
        if found and value == label:
            return time.perf_counter() - start
        await asyncio.sleep(0.001)
    raise AssertionError(f"probe {label} not handled within {PROBE_TIMEOUT_S} s")


def _attacker_handlers(host: Host) -> int:
    return sum(1 for reg in host.bus.handlers(EVENT) if reg.plugin_id == "attacker")


def _said(host: Host, plugin_id: str, words: str) -> bool:
    return any(words in str(line.get("message", "")) for line in host.plugin(plugin_id).logs)


async def test_hostile_chain_stall_leaves_the_victims_latency_and_charges_the_attacker(
    host: Host, write_plugin: WritePlugin
) -> None:
    await enable(host, write_plugin(VICTIM, id="victim", permissions=["storage:use"]))
    baseline = [await _probe(host, f"base-{i}") for i in range(15)]
    await enable(host, write_plugin(STALL, id="attacker", permissions=[]))
    # It ran: its worker registered, the host kept only its share of handlers and told it so.
    await wait_for(lambda: _attacker_handlers(host) == host.settings.hook_handlers_per_event)
    assert _said(host, "attacker", "registration refused")

    during = [await _probe(host, f"attack-{i}") for i in range(40)]

    base_p50, during_p50 = statistics.median(baseline), statistics.median(during)
    assert during_p50 <= max(3 * base_p50, 0.050), (base_p50, during_p50)
    victim = host.plugin("victim")
    assert str(victim.status) == "enabled" and victim.consecutive_failures == 0
    found, seen = host.storage.get("victim", "seen")
    assert found and seen == "attack-39"  # its stop and rewrite changed nothing for the victim
    # Charged: 40 events x 8 handlers outran what it may leave unanswered; the rest were dropped.
    assert host.bus.pending("attacker") == host.settings.hook_observers_pending
    assert host.bus.dropped("attacker") > 0
    assert _said(host, "attacker", "events dropped")
    assert str(host.plugin("attacker").status) == "enabled"  # a legal plugin, only throttled


async def test_hostile_modifier_stall_is_bounded_per_event_and_charged(host: Host, write_plugin: WritePlugin) -> None:
    """With `hooks:modify` the attacker sits in the chain; its handlers still share one budget per
    event, so one event costs the others at most that, and each such event is its timeout."""
    await enable(host, write_plugin(VICTIM, id="victim", permissions=["storage:use"]))
    await enable(host, write_plugin(STALL_IN_CHAIN, id="attacker", permissions=["hooks:modify"]))
    await wait_for(lambda: _attacker_handlers(host) == host.settings.hook_handlers_per_event)
    budget = host.settings.hook_budget_ms / 1000
    start = time.perf_counter()
    outcome = await host.dispatch(EVENT, {"id": "m1", "chatId": CHAT, "body": "hi", "from": CHAT,
                                          "fromMe": False, "timestamp": 0, "type": "chat"}, SESSION)
    took = time.perf_counter() - start
    # 8 handlers of 1.8 s each would be 14.4 s; the plugin's share of the event is one budget.
    assert took < 2 * budget, took
    assert outcome.timed_out == ["attacker"]
    await wait_for(lambda: host.plugin("attacker").consecutive_failures >= 1)
    assert host.plugin("victim").consecutive_failures == 0


# One modifier that holds the event as long as it may: its own budget is longer than the chain's.
HOLD = """
import asyncio
from plugbox.sdk import Plugin


class Hold(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:received", self.hold, priority=1)

    async def hold(self, hook):
        if hook.data["body"] == "cut":
            await asyncio.sleep(3.0)
            await self.ctx.storage.set("answered", hook.data["body"])
"""

# A modifier after it, innocent: the chain is spent by the time its turn comes.
LATER = """
from plugbox.sdk import Plugin


class Later(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:received", self.later, priority=2)

    async def later(self, hook):
        await self.ctx.storage.set("seen", hook.data["body"])
"""


@pytest.mark.parametrize("settings_overrides", [{"hook_chain_budget_ms": 1000}])
async def test_hostile_modifier_cut_by_the_chain_budget_is_charged_and_leaves_no_request_behind(
    host: Host, write_plugin: WritePlugin
) -> None:
    """The chain's budget (1 s) runs out while the attacker's modifier (own budget 5 s) holds the
    event: the attacker is charged a timeout, not the modifier after it; the cut request is off
    the attacker's channel books (not in flight) at once, and its late answer is counted and dropped."""
    await enable(host, write_plugin(HOLD, id="attacker", permissions=["hooks:modify", "storage:use"]))
    await enable(host, write_plugin(LATER, id="later", permissions=["hooks:modify", "storage:use"]))
    channel = host.manager.get("attacker").runtime.channel  # type: ignore[union-attr]
    start = time.perf_counter()
    outcome = await host.dispatch(EVENT, {"id": "m1", "chatId": CHAT, "body": "cut", "from": CHAT,
                                          "fromMe": False, "timestamp": 0, "type": "chat"}, SESSION)
    took = time.perf_counter() - start
    assert took < 2.0, took  # the chain's budget, not the attacker's own 5 s (nor its 3 s)
    assert outcome.timed_out == ["attacker"]
    assert host.plugin("attacker").consecutive_failures == 1
    later = host.plugin("later")
    assert later.consecutive_failures == 0 and str(later.status) == "enabled"
    assert host.storage.get("later", "seen") == (False, None)  # skipped: the chain was spent
    stats = channel.stats()
    assert stats.hooks_in_flight == 0 and stats.requests_in_flight == 0  # before any answer came
    # The attack ran: its handler finishes after the cut; that answer is late and dropped.
    await wait_for(lambda: host.storage.get("attacker", "answered") == (True, "cut"), within=10)
    await wait_for(lambda: channel.stats().late_replies == 1)
    assert str(host.plugin("attacker").status) == "enabled"  # one timeout: charged, not yet stopped
    # The host still serves the chain: an event the attacker does not hold reaches the modifier after it.
    await host.dispatch(EVENT, {"id": "m2", "chatId": CHAT, "body": "after", "from": CHAT,
                                "fromMe": False, "timestamp": 0, "type": "chat"}, SESSION)
    assert host.storage.get("later", "seen") == (True, "after")


# The victim also watches what goes out: every send anyone makes reaches it as message:sent, and as
# the engine's message:persisted.
WATCHER = VICTIM + """
    def on_enable(self, ctx):
        ctx.register_hook("message:sent", self.sent, priority=50)
        ctx.register_hook("message:persisted", self.sent, priority=50)

    async def sent(self, hook):
        await asyncio.sleep(0.01)  # a little work per message it watches
"""
WATCHER = WATCHER.replace("from plugbox.sdk import Plugin", "import asyncio\nfrom plugbox.sdk import Plugin")

SEND_FLOOD = """
import asyncio
from plugbox.sdk import Plugin


class Sends(Plugin):
    async def on_enable(self, ctx):
        self.tasks = [asyncio.ensure_future(self.lane()) for _ in range(32)]

    async def lane(self):
        while True:
            try:
                await self.ctx.messages.send_text("SESSION", "15550002222@c.us", "spam")
            except Exception:
                await asyncio.sleep(0.01)
""".replace("SESSION", SESSION)


async def test_hostile_send_flood_cannot_crowd_out_the_events_an_observer_gets_from_the_engine(
    host: Host, write_plugin: WritePlugin
) -> None:
    """32 lanes of sends, each firing message:sent to the victim, which takes 10 ms per message it
    watches: the flood's events take only their share of the victim's slots; the drops past it are
    charged to the flooder, and every inbound message still reaches the victim."""
    await enable(host, write_plugin(WATCHER, id="victim", permissions=["storage:use"]))
    baseline = [await _probe(host, f"base-{i}") for i in range(10)]
    await enable(host, write_plugin(SEND_FLOOD, id="attacker", permissions=["messages:send"]))
    await wait_for(lambda: host.bus.dropped("attacker") > 0)  # it ran, past its share: charged
    during = [await _probe(host, f"attack-{i}") for i in range(40)]  # each must arrive (or fail)
    assert statistics.median(during) <= max(3 * statistics.median(baseline), 0.050)
    assert host.bus.dropped("victim") == 0  # nothing the engine brought was dropped for it
    assert host.bus.pending("victim") <= host.settings.hook_observers_pending
    assert _said(host, "attacker", "dropped for plugin victim")
    victim = host.plugin("victim")
    assert str(victim.status) == "enabled" and victim.consecutive_failures == 0
    assert str(host.plugin("attacker").status) == "enabled"  # a legal plugin, only shed


@pytest.mark.parametrize("settings_overrides", [{"hook_budget_ms": 8000, "hook_observers_pending": 16,
                                                 "hook_observers_pending_total": 24}])
async def test_many_slow_observers_together_hold_only_the_hosts_bound_and_the_victim_still_gets_every_event(
    host: Host, write_plugin: WritePlugin
) -> None:
    """Three plugins, each within its own cap (16 unanswered calls), would hold 48 between them:
    the host-wide bound (24) is shared fairly, each is charged for its own backlog past its share,
    and a prompt observer beside them gets every event."""
    await enable(host, write_plugin(VICTIM, id="victim", permissions=["storage:use"]))
    baseline = [await _probe(host, f"base-{i}") for i in range(10)]
    attackers = ("slow-a", "slow-b", "slow-c")
    for attacker in attackers:
        await enable(host, write_plugin(STALL.replace('get("sleepS", 1.8)', 'get("sleepS", 30)'), id=attacker,
                                        permissions=[]))

    during = [await _probe(host, f"attack-{i}") for i in range(20)]

    held = {a: host.bus.pending(a) for a in attackers}
    assert sum(held.values()) <= 24, held  # not 3 x 16: the host's bound, shared
    assert all(host.bus.dropped(a) > 0 for a in attackers)  # the attack ran; each charged for its own
    assert host.bus.dropped("victim") == 0
    base_p50, during_p50 = statistics.median(baseline), statistics.median(during)
    assert during_p50 <= max(3 * base_p50, 0.050), (base_p50, during_p50)
    victim = host.plugin("victim")
    assert str(victim.status) == "enabled" and victim.consecutive_failures == 0
