"""`message:sending` end to end with real workers (SPEC §4): a moderation plugin granted
`hooks:modify` rewrites what another plugin sends (text and chat), and a malformed answer from it
refuses the send instead of letting the original through."""

from __future__ import annotations

import pytest

from plugbox.host import Host

from .conftest import SESSION, WritePlugin, enable, wait_for

pytestmark = pytest.mark.timeout(60)

PEER = "15550100001@c.us"
DESK = "15550100077@c.us"

# Answers every inbound message, and records how its send went.
REPLIER = """
from plugbox.sdk import CapabilityError, Plugin


class Replier(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:received", self.answer)

    async def answer(self, hook):
        if hook.data.get("fromMe"):
            return
        try:
            await self.ctx.messages.send_text(hook.session_id, hook.data["chatId"], "you said: " + hook.data["body"])
            await self.ctx.storage.set("outcome", "sent")
        except CapabilityError as exc:
            await self.ctx.storage.set("outcome", str(exc))
"""

MODERATOR = f"""
from plugbox.sdk import HookResult, Plugin


class Moderator(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:sending", self.moderate)

    def moderate(self, hook):
        asked = hook.data["input"]
        if "secret" in asked["text"]:  # hand it to the desk instead, redacted
            return HookResult(data={{**hook.data, "input": {{**asked, "chatId": {DESK!r}, "text": "[redacted]"}}}})
        if "broken" in asked["text"]:  # a buggy rewrite: no text at all
            return HookResult(data={{**hook.data, "input": {{"chatId": asked["chatId"]}}}})
        return None
"""


@pytest.fixture
async def plugins(host: Host, write_plugin: WritePlugin) -> Host:
    await enable(host, write_plugin(MODERATOR, id="moderator", permissions=["hooks:modify"]))
    await enable(host, write_plugin(REPLIER, id="replier", permissions=["messages:send", "storage:use"]))
    return host


async def test_a_moderator_rewrites_the_text_and_the_chat_of_another_plugins_send(plugins: Host) -> None:
    await plugins.engine.inject_inbound(SESSION, PEER, "my secret is 1234")
    await wait_for(lambda: plugins.storage.get("replier", "outcome")[0])
    assert plugins.storage.get("replier", "outcome") == (True, "sent")
    assert [(m["chatId"], m["body"]) for m in plugins.engine.sent] == [(DESK, "[redacted]")]


async def test_a_message_the_moderator_lets_through_is_sent_unchanged(plugins: Host) -> None:
    await plugins.engine.inject_inbound(SESSION, PEER, "hello")
    await wait_for(lambda: plugins.storage.get("replier", "outcome")[0])
    assert [(m["chatId"], m["body"]) for m in plugins.engine.sent] == [(PEER, "you said: hello")]


async def test_a_malformed_answer_from_the_moderator_refuses_the_send(plugins: Host) -> None:
    await plugins.engine.inject_inbound(SESSION, PEER, "this is broken")
    await wait_for(lambda: plugins.storage.get("replier", "outcome")[0])
    _found, outcome = plugins.storage.get("replier", "outcome")
    assert "refused: plugin 'moderator' returned malformed message:sending data" in outcome
    assert "$.input" in outcome  # names the field at fault
    assert plugins.engine.sent == []
