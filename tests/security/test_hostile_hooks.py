"""Hostile hook data (issue 12, class 4), with real confined workers.

A plugin earlier in a chain must not be able to hurt the plugins after it: data it returns that
does not fit the event's payload is refused and charged to it, never delivered to a victim worker
(which might not decode it, or crash on it, and have its breaker opened); and without
`hooks:modify` it cannot rewrite an inbound message so that another plugin sends attacker-chosen
text to an attacker-chosen chat (confused deputy).
"""

from __future__ import annotations

from typing import Any

import pytest

from plugbox.lifecycle import PluginView, Status

from .conftest import SESSION, Attack, alive, wait_for

pytestmark = pytest.mark.timeout(120)

PEER = "15550100001@c.us"
ATTACKER_CHAT = "15550109999@c.us"

# Hostile data of four kinds, picked by the inbound body: one just under the frame cap (the
# victim's request frame, carrying the same data plus the hook context, would be over it), deeply
# nested data under a key of its own, wrong types, and an invented key.
POISONER = """
import msgspec
from plugbox.sdk import HookResult, Plugin

FRAME_CAP = 16 << 20


def just_under_the_cap(data):
    # sized so that this worker's own answer frame fits by a few bytes: the request carrying the
    # same data to the next worker (plus event, session, timestamp, source, config) would not
    answer = ["res", 1, True, {"continue": True, "data": {**data, "body": ""}, "error": None}, None]
    return {**data, "body": "x" * (FRAME_CAP - 8 - 5 - len(msgspec.msgpack.encode(answer)))}


def nested(depth):
    value = "leaf"
    for _ in range(depth):
        value = [value]
    return value


class Poisoner(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:received", self.poison, priority=1)

    def poison(self, hook):
        kind = hook.data["body"]
        if kind == "huge":
            return HookResult(data=just_under_the_cap(hook.data))
        if kind == "deep":
            return HookResult(data={**hook.data, "extra": nested(60)})
        if kind == "typed":
            return HookResult(data={**hook.data, "body": None})
        return HookResult(data={**hook.data, "invented": {"key": "value"}})
"""

# Written for the schema: the body is a str, the ids are strings.
VICTIM = """
from plugbox.sdk import Plugin


class Victim(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:received", self.record, priority=2)

    async def record(self, hook):
        seen = await self.ctx.storage.get("seen", [])
        seen.append([hook.data["id"], hook.data["chatId"], hook.data["body"].upper()])
        await self.ctx.storage.set("seen", seen)
"""

KINDS = ["huge", "deep", "typed", "invented"]


def _message(n: int, body: str) -> dict[str, Any]:
    return {"id": f"m{n}", "chatId": PEER, "from": PEER, "to": "15550000001@c.us", "body": body, "fromMe": False,
            "timestamp": 1_700_000_000 + n}


@pytest.mark.parametrize("poisoner_permissions", [["hooks:modify"], []], ids=["granted", "zero-permission"])
async def test_hostile_hook_data_is_charged_to_its_producer_and_never_reaches_the_next_worker(
    attack: Attack, poisoner_permissions: list[str]
) -> None:
    host = attack.host
    await _enable(attack, "poisoner", POISONER, poisoner_permissions)
    victim_pid = (await _enable(attack, "victim", VICTIM, ["storage:use"])).worker_pid
    granted = bool(poisoner_permissions)

    for n, kind in enumerate(KINDS):
        outcome = await host.dispatch("message:received", _message(n, kind), SESSION, source="engine")
        assert not outcome.timed_out, outcome
        assert outcome.data == _message(n, kind)  # the caller, too, has the original
        if granted:  # the attack ran and was refused: charged to the poisoner, and to it only
            assert [plugin for plugin, _ in outcome.errors] == ["poisoner"], outcome.errors
            assert "returned data refused" in outcome.errors[0][1]
        else:  # an observer's data is ignored outright
            assert outcome.errors == []

    # The victim saw every original message, and nothing else; its worker never faltered.
    assert host.storage.get("victim", "seen") == (True, [[f"m{n}", PEER, kind.upper()] for n, kind in enumerate(KINDS)])
    victim = host.plugin("victim")
    assert victim.status == Status.ENABLED and victim.consecutive_failures == 0
    assert victim_pid is not None and victim.worker_pid == victim_pid and alive(victim_pid)
    poisoner = host.plugin("poisoner")
    if not granted:
        assert sum("hooks:modify" in line["message"] for line in poisoner.logs) == 1  # told once, not per message
    assert poisoner.status == Status.ENABLED  # a refused answer is an error, not a crash
    await attack.aftermath()


# The attacker: no permission at all, first in the chain, rewriting who the message is from and
# what it says, for the benefit of a plugin that answers whatever arrives.
ATTACKER = f"""
from plugbox.sdk import HookResult, Plugin


class Deputy(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:received", self.rewrite, priority=1)

    def rewrite(self, hook):
        return HookResult(data={{**hook.data, "chatId": {ATTACKER_CHAT!r}, "from": {ATTACKER_CHAT!r},
                                 "body": "send me your codes"}})
"""

ECHO = """
from plugbox.sdk import Plugin


class Echo(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:received", self.echo)

    async def echo(self, hook):
        if not hook.data.get("fromMe"):
            await self.ctx.messages.send_text(hook.session_id, hook.data["chatId"], "echo: " + hook.data["body"])
"""


async def test_a_zero_permission_plugin_cannot_make_another_plugin_send_its_text_to_its_chat(
    attack: Attack,
) -> None:
    host = attack.host
    await _enable(attack, "attacker", ATTACKER, [])
    await _enable(attack, "echo", ECHO, ["messages:send"])

    await host.inject_inbound(SESSION, PEER, "hello")  # the real inbound path
    await wait_for(lambda: len(host.engine.sent) >= 1, within=10)

    assert [(m["chatId"], m["body"]) for m in host.engine.sent] == [(PEER, "echo: hello")]
    assert not any(m["chatId"] == ATTACKER_CHAT for m in host.engine.sent)
    # the attack ran: its rewrite reached the host and was ignored, and the attacker was told so
    await wait_for(lambda: any("hooks:modify" in line["message"] for line in host.plugin("attacker").logs), within=5)
    await attack.aftermath()


async def _enable(attack: Attack, plugin_id: str, source: str, permissions: list[str]) -> PluginView:
    attack.host.load_plugin(attack.write_plugin(source, id=plugin_id, permissions=permissions))
    await attack.host.set_active_sessions(plugin_id, [SESSION])
    view = await attack.host.enable(plugin_id)
    assert view.status == Status.ENABLED, view.error
    return view
