"""Noisy neighbours on the host's disk (`storage_total_bytes`): several hostile plugins, each within
its own per-plugin quota, fill storage together while a victim keeps writing within its share.

Real confined workers. Asserts: every hostile plugin ran, filled up to its share and was refused
naming `storage_total_bytes`; the victim, writing within its share before, during and after, was
never refused; the plugins together never held more than the total; only the attackers were
charged (the quota's refusal counts); the host survived (`aftermath`).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from plugbox.lifecycle import Status

from .conftest import CARRY, SESSION, Attack, carrying, enable, reported

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(120)]

QUOTA = 4 << 20
TOTAL = 8 << 20  # four plugins holding data (the victim and three attackers): 2 MiB each
HOSTILE = ("hostile1", "hostile2", "hostile3")
CHUNK = 64 << 10

VICTIM = CARRY + """
from plugbox.sdk import Plugin, CapabilityError

class Victim(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("webhook:before", self.write)

    async def write(self, hook):
        n = hook.data["payload"]["data"]["n"]
        try:
            await self.ctx.storage.set(f"v{n:03}", b"\\1" * hook.data["payload"]["data"]["size"])
        except CapabilityError as exc:
            return carry(hook, {"n": n, "error": str(exc)[:300]})
        return carry(hook, {"n": n, "ok": True})
"""

FILL = """
from plugbox.sdk import CapabilityError

async def attack(ctx, cfg):
    await asyncio.sleep(cfg["wait"])  # every attacker has reported `started`: all hold data
    value = b"\\0" * cfg["size"]
    written, errors = 0, []
    for i in range(cfg["keys"]):
        try:
            await ctx.storage.set(f"fill{i:04}", value)
            written += 1
        except CapabilityError as exc:
            errors.append(str(exc)[:400])
            if len(errors) >= 3:
                break
    return {"written": written, "errors": errors}
"""


class Victim:
    def __init__(self, attack: Attack) -> None:
        self.attack = attack
        self.written = 0
        self.failures: list[Any] = []

    async def write(self) -> None:
        """One write of CHUNK bytes of its own, through a hook of its worker."""
        value = {"n": self.written, "size": CHUNK}
        outcome = await self.attack.host.bus.execute("webhook:before", carrying(value), SESSION, plugin="victim")
        if outcome.errors or outcome.timed_out or reported(outcome).get("ok") is not True:
            self.failures.append(reported(outcome) if not outcome.errors else outcome.errors)
        self.written += 1


@pytest.mark.parametrize("settings_overrides", [{
    "storage_quota_bytes": QUOTA, "storage_total_bytes": TOTAL, "hook_budget_ms": 20000}])
async def test_plugins_filling_storage_together_stop_at_their_share_and_the_victim_keeps_writing(
    attack: Attack,
) -> None:
    host = attack.host
    entry = await enable(host, attack.write_plugin(VICTIM, id="victim", permissions=["storage:use", "hooks:modify"]))
    assert entry.status == Status.ENABLED, entry.error
    victim = Victim(attack)
    await victim.write()  # the victim holds data before the attack
    for plugin_id in HOSTILE:
        hostile = await enable(host, attack.plugin(FILL, {"wait": 1.0, "size": 256 << 10, "keys": 64},
                                                   id=plugin_id, in_enable=False))
        assert hostile.status == Status.ENABLED, hostile.error
    attacks = [asyncio.ensure_future(host.bus.execute("webhook:before", carrying({"id": "m1"}), SESSION,
                                                      plugin=plugin_id)) for plugin_id in HOSTILE]
    while not all(a.done() for a in attacks):  # the victim keeps writing while they fill
        if victim.written < 20:
            await victim.write()
        await asyncio.sleep(0.05)
    while victim.written < 20:  # and after: 20 x 64 KiB on disk is within its 2 MiB share
        await victim.write()

    share = TOTAL // 4
    for plugin_id, done in zip(HOSTILE, attacks, strict=True):
        outcome = done.result()
        attack.hook_outcomes.append(outcome)
        result = reported(outcome)["outcome"]
        assert result["ran"] is True and result["ok"] is True, result
        value = result["value"]
        assert 0 < value["written"] < 64, value  # it wrote, and was stopped well before its 16 MiB
        assert value["errors"] and all("storage_total_bytes" in e and repr(plugin_id) in e for e in value["errors"])
        assert share - (300 << 10) < host.storage.usage(plugin_id) <= share  # stopped at its share, not before
    assert victim.failures == [], victim.failures
    held = sum(host.storage.usage(p) for p in ("victim", *HOSTILE))
    assert held <= TOTAL
    refused = host.storage.quota.refused
    assert all(refused.get((p, "total"), 0) >= 3 for p in HOSTILE)
    assert not any(p == "victim" for p, _ in refused)  # the victim was never charged a refusal
    await attack.aftermath()
