"""Search providers and the conversation capabilities from real confined workers."""

from __future__ import annotations

import pytest

from plugbox.host import Host

from .conftest import SESSION, WritePlugin, enable

pytestmark = pytest.mark.timeout(60)

CHAT = "15550001111@c.us"

SEARCHER = """
import asyncio
from plugbox.sdk import Plugin

class Searcher(Plugin):
    async def on_load(self, ctx):
        ctx.register_search_provider(self.search)

    async def search(self, query):
        mode = self.ctx.config.get("mode", "ok")
        if mode == "raise":
            raise ValueError("index unavailable for " + query["q"])
        if mode == "hang":
            await asyncio.sleep(30)
        return [{"title": "hit for " + query["q"], "plugin": self.ctx.plugin_id}]
"""

SEARCH_SCHEMA = {"type": "object", "properties": {"mode": {"type": "string", "default": "ok"}}}


async def _searcher(host: Host, write_plugin: WritePlugin, plugin_id: str, mode: str) -> None:
    entry = host.load_plugin(
        write_plugin(SEARCHER, id=plugin_id, permissions=["search:provide"], configSchema=SEARCH_SCHEMA)
    )
    await host.set_config(plugin_id, {"mode": mode})
    await host.enable(entry.plugin_id)


async def test_search_asks_every_provider_and_reports_each_outcome(host: Host, write_plugin: WritePlugin) -> None:
    await _searcher(host, write_plugin, "alpha", "ok")
    await _searcher(host, write_plugin, "beta", "raise")
    await _searcher(host, write_plugin, "gamma", "hang")

    results = await host.search.query(None, {"q": "invoice"}, timeout=1.0)

    assert [r["plugin"] for r in results] == ["alpha", "beta", "gamma"]
    alpha, beta, gamma = results
    assert alpha == {"plugin": "alpha", "ok": True, "results": [{"title": "hit for invoice", "plugin": "alpha"}]}
    assert beta["ok"] is False and "index unavailable for invoice" in beta["error"]
    assert gamma["ok"] is False and "within 1 s" in gamma["error"]

    only = await host.search.query("alpha", {"q": "x"}, timeout=5.0)
    assert only == [{"plugin": "alpha", "ok": True, "results": [{"title": "hit for x", "plugin": "alpha"}]}]


async def test_search_naming_a_plugin_without_a_provider_is_an_ok_false_entry(host: Host) -> None:
    assert await host.search.query("nobody", {"q": "x"}) == [
        {"plugin": "nobody", "ok": False, "error": "no plugin with id 'nobody'"}
    ]


async def test_registering_a_provider_without_search_provide_fails_the_enable(
    host: Host, write_plugin: WritePlugin
) -> None:
    entry = host.load_plugin(write_plugin(SEARCHER, id="sneaky", permissions=[]))
    with pytest.raises(Exception, match="search:provide"):
        await host.enable(entry.plugin_id)
    assert await host.search.query(None, {"q": "x"}) == []


HELPDESK = """
from plugbox.sdk import CapabilityError, Plugin

class Helpdesk(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook):
        if hook.data["body"] != "help":
            return None
        mapping = {"conversationId": "conv-7", "provider": "chatwoot", "externalId": "ext-42",
                   "sessionId": hook.session_id, "chatId": hook.data["chatId"]}
        out = {"upsert": await self.ctx.mappings.upsert(mapping)}
        out["by_provider"] = await self.ctx.mappings.get_by_provider("chatwoot", "ext-42")
        out["get"] = await self.ctx.mappings.get("conv-7")
        out["handover"] = await self.ctx.handover.set("conv-7", "human")
        out["sent"] = await self.ctx.conversations.send(
            {"conversationId": "conv-7", "sessionId": hook.session_id, "chatId": hook.data["chatId"],
             "text": "an agent will answer shortly", "provider": "chatwoot", "externalId": "ext-42"})
        try:
            await self.ctx.handover.set("conv-7", "escalated")
        except CapabilityError as exc:
            out["bad_state"] = str(exc)
        try:
            await self.ctx.conversations.send({"conversationId": "c", "sessionId": "elsewhere",
                                               "chatId": "x@c.us", "text": "hi"})
        except CapabilityError as exc:
            out["bad_session"] = str(exc)
        await self.ctx.storage.set("out", out)
"""


async def test_conversation_capabilities_round_trip_from_a_worker(host: Host, write_plugin: WritePlugin) -> None:
    await enable(host, write_plugin(HELPDESK, permissions=["conversation:send", "storage:use"]))
    await host.inject_inbound(SESSION, CHAT, "help")

    found, out = host.storage.get("p", "out")
    assert found
    assert out["upsert"]["externalId"] == "ext-42"
    assert out["by_provider"] == out["get"] == out["upsert"]
    assert (out["handover"]["state"], out["handover"]["previous"]) == ("human", None)
    assert out["sent"]["conversationId"] == "conv-7"
    assert [m["body"] for m in host.engine.sent] == ["an agent will answer shortly"]
    assert "invalid argument: 'state'" in out["bad_state"]
    assert "session 'elsewhere'" in out["bad_session"]
    assert host.conversations.get_handover("p", "conv-7") == "human"
    [record] = host.conversations.messages("p", "conv-7")
    assert record["messageId"] == out["sent"]["message"]["id"]


async def test_conversation_verbs_without_the_permission_raise_in_the_worker(
    host: Host, write_plugin: WritePlugin
) -> None:
    await enable(host, write_plugin(HELPDESK, permissions=["storage:use"]))
    await host.inject_inbound(SESSION, CHAT, "help")
    assert host.storage.get("p", "out") == (False, None)
    assert host.engine.sent == []
