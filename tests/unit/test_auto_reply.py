"""The bundled auto-reply built-in, through a real host and the loopback engine: keyword rules from
its config answer inbound messages, quoting them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from plugbox.builtins.auto_reply import MANIFEST, AutoReply
from plugbox.host import Host
from plugbox.sdk import HookResult, Plugin

PEER = "15550100001"
PEER_ID = "15550100001@c.us"
RULES = [{"keyword": "price", "reply": "It costs 5 EUR."}, {"keyword": "hours", "reply": "Open 9-17."}]

MakeHost = Callable[..., Host]


@pytest.fixture
async def replying(host: Host) -> Host:
    """A host with auto-reply enabled on live session `main`, with RULES."""
    host.register_builtin(AutoReply, MANIFEST)
    await host.engine.create_session("main")
    await host.set_active_sessions("auto-reply", ["main"])
    await host.set_config("auto-reply", {"rules": RULES})
    await host.enable("auto-reply")
    return host


def _bodies(host: Host) -> list[str]:
    return [m["body"] for m in host.engine.sent]


async def test_keyword_gets_its_reply_quoting_the_message(replying: Host) -> None:
    inbound = await replying.inject_inbound("main", PEER, "what is the price?")
    (sent,) = replying.engine.sent
    assert (sent["body"], sent["chatId"], sent["quotedId"]) == ("It costs 5 EUR.", PEER_ID, inbound["id"])
    assert sent["session_id"] == "main"


async def test_keyword_matches_case_insensitively(replying: Host) -> None:
    await replying.inject_inbound("main", PEER, "Your HOURS please")
    assert _bodies(replying) == ["Open 9-17."]


async def test_non_matching_text_gets_no_reply(replying: Host) -> None:
    await replying.inject_inbound("main", PEER, "hello there")
    assert replying.engine.sent == []


async def test_keyword_inside_a_longer_word_does_not_match(replying: Host) -> None:
    await replying.inject_inbound("main", PEER, "priceless")
    assert replying.engine.sent == []


async def test_own_messages_are_ignored(replying: Host) -> None:
    own = {"id": "own-1", "chatId": PEER_ID, "from": "me@c.us", "body": "price", "fromMe": True}
    await (await replying.messages.receive("main", own)).settled()
    assert replying.engine.sent == []


async def test_own_messages_get_replies_when_ignore_from_me_is_off(replying: Host) -> None:
    inbound = await replying.inject_inbound("main", PEER, "warm-up")
    await replying.set_config("auto-reply", {"rules": RULES, "ignoreFromMe": False})
    own = {**inbound, "body": "price", "fromMe": True}
    await (await replying.messages.receive("main", own)).settled()
    assert _bodies(replying) == ["It costs 5 EUR."]


async def test_no_reply_on_a_session_it_is_not_active_on(replying: Host) -> None:
    await replying.engine.create_session("other")
    await replying.inject_inbound("other", PEER, "price")
    assert replying.engine.sent == []


async def test_no_reply_while_disabled(replying: Host) -> None:
    await replying.disable("auto-reply")
    await replying.inject_inbound("main", PEER, "price")
    assert replying.engine.sent == []


async def test_per_session_rules_override_the_base_rules(replying: Host) -> None:
    await replying.set_session_config(
        "auto-reply", "main", {"rules": [{"keyword": "price", "reply": "Ask the shop."}]}
    )
    await replying.inject_inbound("main", PEER, "price")
    assert _bodies(replying) == ["Ask the shop."]


async def test_the_reply_goes_through_message_sending_hooks(replying: Host) -> None:
    class Guard(Plugin):
        def on_load(self, ctx: Any) -> None:
            ctx.register_hook("message:sending", lambda _hook: HookResult(stop=True))

    replying.register_builtin(Guard, {"id": "guard", "name": "g", "version": "1.0.0", "type": "extension",
                                      "main": "builtin", "permissions": ["hooks:modify"]})
    await replying.set_active_sessions("guard", ["main"])
    await replying.enable("guard")
    outcome_message = await replying.inject_inbound("main", PEER, "price")  # the veto must not break it
    assert outcome_message["body"] == "price"
    assert replying.engine.sent == []


async def test_bundled_host_registers_auto_reply_as_a_builtin(make_host: MakeHost) -> None:
    host = make_host()
    assert "auto-reply" not in host.builtin_ids()
    bundled = Host(host.settings)
    try:
        entry = bundled.manager.get("auto-reply")
        assert entry.builtin
        assert sorted(entry.permissions) == ["messages:send"]
    finally:
        await bundled.db.close()
