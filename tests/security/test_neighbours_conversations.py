"""A neighbour's `conversations.send` must never cost a victim its own records.

`ConversationStore.record_sent` keeps "at most `conversation_messages_per_plugin` rows per plugin"
by deleting the plugin's rows whose `seq` is at most `seq - bound`. `seq` is the table's one
AUTOINCREMENT, shared by every plugin: another plugin's sends move it on, so the victim's next send
deleted every record of its own older than the last `bound` rows of ALL plugins, however few it
held. One attacker sending `bound` messages made a quiet victim lose its whole history (measured
before the fix: 6 records kept of 6 -> 1).

Real confined workers on both sides: the attacker sends in on_enable, the victim records through its
own hook and reads its conversation back with `conversations.messages`.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from plugbox.lifecycle import Status

from .conftest import CARRY, SESSION, Attack, carrying, enable, reported

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(120)]

BOUND = 20  # conversation_messages_per_plugin here

VICTIM = CARRY + """
from plugbox.sdk import Plugin

class Victim(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("webhook:before", self.probe)

    async def probe(self, hook):
        cfg = hook.data["payload"]["data"]
        for i in range(cfg["send"]):
            await self.ctx.conversations.send({"conversationId": "mine", "sessionId": cfg["session"],
                                               "chatId": "victim-chat", "text": f"v{cfg['round']}-{i}"})
        kept = await self.ctx.conversations.messages("mine")
        return carry(hook, {"id": "m1", "kept": [m["text"] for m in kept]})
"""

FLOOD = """
async def attack(ctx, cfg):
    for i in range(cfg["count"]):
        await ctx.conversations.send({"conversationId": f"c{i}", "sessionId": cfg["session"],
                                      "chatId": "attacker-chat", "text": "x"})
    return {"sent": cfg["count"]}
"""

PERMS = ["storage:use", "conversation:send", "conversation:read", "messages:send"]


async def _victim_round(attack: Attack, round_: int, send: int) -> list[str]:
    outcome = await attack.host.bus.execute(
        "webhook:before", carrying({"send": send, "round": round_, "session": SESSION}), SESSION, plugin="victim")
    assert not outcome.errors and not outcome.timed_out, outcome
    kept: list[str] = reported(outcome)["kept"]
    return kept


@pytest.mark.parametrize("settings_overrides", [{"conversation_messages_per_plugin": BOUND,
                                                 "hook_budget_ms": 20000}])
async def test_a_neighbours_sends_do_not_trim_the_victims_conversation_records(attack: Attack) -> None:
    victim = await enable(attack.host, attack.write_plugin(VICTIM, id="victim", permissions=[*PERMS, "hooks:modify"]))
    assert victim.status == Status.ENABLED, victim.error
    before = await _victim_round(attack, 0, 5)
    assert before == [f"v0-{i}" for i in range(5)]

    run = await attack.run(FLOOD, {"count": BOUND, "session": SESSION}, permissions=PERMS)
    assert run.result["ok"] is True and run.result["value"] == {"sent": BOUND}, run.result

    after: list[Any] = await _victim_round(attack, 1, 1)
    # The victim holds 6 records, far under its own bound of 20: none may go for another plugin's sends.
    assert after == [*before, "v1-0"], f"victim kept {len(after)} of its 6 records: {after}"
    await attack.aftermath()
