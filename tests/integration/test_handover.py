"""Handover gates dispatch (plugbox.handover), end to end through the HTTP API with real workers:
once a helpdesk plugin hands a chat to a human, that chat's messages stop reaching the bots, keep
reaching the helpdesk (the owner) and plugins that only observe, and come back after release."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugbox.api import create_app
from plugbox.host import Host
from plugbox.storage.conversations import ConversationStore
from tests.integration.conftest import SESSION, WritePlugin

pytestmark = pytest.mark.timeout(90)

ADMIN = {"X-API-Key": "admin-key"}
CHAT = "15550001111@c.us"
OTHER = "15550002222@c.us"

HELPDESK = """
from plugbox.sdk import Plugin

class Helpdesk(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook):
        chat, body = hook.data["chatId"], hook.data["body"]
        ref = "conv-" + chat
        if body == "agent":
            await self.ctx.mappings.upsert({"conversationId": ref, "provider": "desk", "externalId": chat,
                                            "sessionId": hook.session_id, "chatId": chat})
            await self.ctx.storage.set("handed", await self.ctx.handover.set(ref, "human"))
            await self.ctx.conversations.send({"conversationId": ref, "sessionId": hook.session_id,
                                               "chatId": chat, "text": "an agent will answer"})
            return None
        state = await self.ctx.handover.get(ref)
        if state is not None and state["state"] == "human":
            seen = await self.ctx.storage.get("forwarded", [])
            await self.ctx.storage.set("forwarded", seen + [body])
            if body == "bot please":
                await self.ctx.handover.set(ref, "bot")
        await self.ctx.storage.set("records", await self.ctx.conversations.messages(ref))
"""

ECHO = """
from plugbox.sdk import Plugin

class Echo(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook):
        await self.ctx.messages.send_text(hook.session_id, hook.data["chatId"], "echo: " + hook.data["body"])
"""

LOGGER = """
from plugbox.sdk import Plugin

class Logger(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook):
        seen = await self.ctx.storage.get("seen", [])
        await self.ctx.storage.set("seen", seen + [hook.data["body"]])
"""

READER = """
from plugbox.sdk import CapabilityError, Plugin

class Reader(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook):
        try:
            await self.ctx.handover.get("conv-x")
        except CapabilityError as exc:
            await self.ctx.storage.set("denied", str(exc))
"""


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {"admin_api_keys": ("admin-key",), "plugins_dir": str(tmp_path / "plugins")}


@pytest.fixture
async def client(host: Host) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(host)), base_url="http://t") as c:
        yield c


async def _enable(client: httpx.AsyncClient, host: Host, plugin_dir: Path) -> None:
    plugin_id = host.load_plugin(plugin_dir).plugin_id
    r = await client.put(f"/api/plugins/{plugin_id}/sessions", json={"activeSessions": [SESSION]}, headers=ADMIN)
    assert r.status_code == 200, r.text
    r = await client.post(f"/api/plugins/{plugin_id}/enable", headers=ADMIN)
    assert r.json()["status"] == "enabled", r.text


async def _say(client: httpx.AsyncClient, body: str, chat: str = CHAT) -> list[str]:
    r = await client.post(f"/api/sessions/{SESSION}/messages", json={"chatId": chat, "body": body}, headers=ADMIN)
    assert r.status_code == 200, r.text
    return sorted(m["body"] for m in r.json()["sent"])


@pytest.fixture
async def desk(client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin) -> httpx.AsyncClient:
    await _enable(client, host, write_plugin(
        HELPDESK, id="desk", permissions=["conversation:send", "conversation:read", "storage:use"]))
    await _enable(client, host, write_plugin(ECHO, id="echo", permissions=["messages:send"]))
    await _enable(client, host, write_plugin(LOGGER, id="logger", permissions=["storage:use"]))
    return client


async def test_a_handed_over_chat_no_longer_reaches_the_bot(desk: httpx.AsyncClient, host: Host) -> None:
    assert await _say(desk, "hello") == ["echo: hello"]
    assert await _say(desk, "agent") == ["an agent will answer", "echo: agent"]  # handed over while it ran

    assert await _say(desk, "my order is late") == []  # the bot stays silent

    assert host.storage.get("desk", "forwarded") == (True, ["my order is late"])  # the owner still gets it
    assert host.storage.get("logger", "seen")[1][-1] == "my order is late"  # so does a plugin that cannot answer
    _, handed = host.storage.get("desk", "handed")
    assert (handed["state"], handed["sessionId"], handed["chatId"]) == ("human", SESSION, CHAT)


async def test_other_chats_keep_their_bot_while_one_is_handed_over(desk: httpx.AsyncClient) -> None:
    await _say(desk, "agent")
    assert await _say(desk, "hi", chat=OTHER) == ["echo: hi"]
    assert await _say(desk, "still there?") == []


async def test_the_bot_answers_again_after_release(desk: httpx.AsyncClient, host: Host) -> None:
    await _say(desk, "agent")
    assert await _say(desk, "bot please") == []  # released while the bot was already skipped
    assert await _say(desk, "hello again") == ["echo: hello again"]
    assert host.storage.get("desk", "forwarded") == (True, ["bot please"])
    _, records = host.storage.get("desk", "records")
    assert [r["text"] for r in records] == ["an agent will answer"]


async def test_a_stopped_owner_gates_nothing_until_it_is_back(desk: httpx.AsyncClient) -> None:
    await _say(desk, "agent")
    assert (await desk.post("/api/plugins/desk/disable", headers=ADMIN)).json()["status"] == "disabled"
    assert await _say(desk, "anyone?") == ["echo: anyone?"]  # nobody forwards it: the bot answers
    assert (await desk.post("/api/plugins/desk/enable", headers=ADMIN)).json()["status"] == "enabled"
    assert await _say(desk, "and now?") == []  # its human state gates again


async def test_handover_survives_a_host_restart(desk: httpx.AsyncClient, host: Host) -> None:
    await _say(desk, "agent")
    reopened = ConversationStore(host.db)  # what a restarted host rebuilds its gate from
    assert reopened.human_owners(SESSION, CHAT) == {"desk"}
    assert reopened.human_owners(SESSION, OTHER) == frozenset()


async def test_reading_handover_state_needs_conversation_read(
    client: httpx.AsyncClient, host: Host, write_plugin: WritePlugin
) -> None:
    await _enable(client, host, write_plugin(READER, id="reader", permissions=["storage:use"]))
    await _say(client, "x")
    _, denied = host.storage.get("reader", "denied")
    assert "lacks permission 'conversation:read' required by handover.get" in denied
