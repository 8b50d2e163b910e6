"""Search providers that never answer, or answer with hostile text (issue 12: any legal thing, many
times, while not answering). A query waits for a silent provider only its budget; the request then
no longer counts on that worker's books (nothing piles up however many queries come), the timeout is
charged to that plugin (its breaker stops it), and a neighbour's provider keeps answering. What a
provider's error says reaches the API escaped, capped and without its secrets. Real workers."""

from __future__ import annotations

import asyncio

import pytest

from plugbox.capabilities.search import ERROR_MAX_CHARS
from plugbox.host import Host
from plugbox.lifecycle import Status
from tests.security.conftest import WritePlugin, enable, wait_for

pytestmark = pytest.mark.timeout(120)

SECRET = "s3cr3t-search-token-777"
SILENT = """
import asyncio
from plugbox.sdk import Plugin


class Silent(Plugin):
    def on_load(self, ctx):
        ctx.register_search_provider(self.search)

    async def search(self, query):
        await self.ctx.storage.set("asked", query["q"])
        await asyncio.sleep(60)
"""
LOUD = """
from plugbox.sdk import Plugin


class Loud(Plugin):
    def on_load(self, ctx):
        ctx.register_search_provider(self.search)

    def search(self, query):
        raise RuntimeError("token=" + self.ctx.config["apiToken"] + "\\n\\x1b[2J forged line" + "e" * 100000)
"""
HONEST = """
from plugbox.sdk import Plugin


class Honest(Plugin):
    def on_load(self, ctx):
        ctx.register_search_provider(self.search)

    def search(self, query):
        return [{"title": "hit for " + query["q"]}]
"""
SCHEMA = {"type": "object", "properties": {"apiToken": {"type": "string", "secret": True}}}


async def test_a_silent_search_provider_holds_nothing_past_its_budget_and_is_charged(
        host: Host, write_plugin: WritePlugin) -> None:
    attacker = await enable(host, write_plugin(SILENT, id="attacker", permissions=["search:provide", "storage:use"]))
    victim = await enable(host, write_plugin(HONEST, id="victim", permissions=["search:provide"]))
    runtime = attacker.runtime
    assert runtime is not None
    answers = await asyncio.gather(*(host.search.query(None, {"q": f"q{i}"}, timeout=0.3) for i in range(3)))
    assert host.storage.get("attacker", "asked")[0]  # it ran: its provider got the queries
    for entries in answers:
        by_plugin = {e["plugin"]: e for e in entries}
        assert by_plugin["attacker"]["ok"] is False and "did not answer" in by_plugin["attacker"]["error"]
        assert by_plugin["victim"]["ok"] is True
    # Nothing of the abandoned queries is left on the attacker's books, before any late answer.
    assert attacker.status == Status.ENABLED and attacker.record.consecutive_failures == 3
    assert runtime.channel_stats().requests_in_flight == 0
    await asyncio.gather(*(host.search.query(None, {"q": f"more{i}"}, timeout=0.3) for i in range(20)))
    # Charged: each query past its budget is its timeout; the breaker stops it.
    await wait_for(lambda: attacker.status == Status.ERROR)
    assert "hook budget exceeded repeatedly" in (attacker.error or "")
    assert victim.status == Status.ENABLED and victim.record.consecutive_failures == 0
    assert (await host.search.query("victim", {"q": "after"}))[0]["ok"] is True


async def test_a_search_providers_error_reaches_the_api_escaped_capped_and_redacted(
        host: Host, write_plugin: WritePlugin) -> None:
    entry = host.load_plugin(write_plugin(LOUD, id="attacker", permissions=["search:provide"], configSchema=SCHEMA))
    await host.set_config("attacker", {"apiToken": SECRET})
    await host.enable(entry.plugin_id)
    (answer,) = await host.search.query("attacker", {"q": "x"})
    error = answer["error"]
    assert answer["ok"] is False and "forged line" in error  # it ran, and raised
    assert SECRET not in error
    assert "\n" not in error and "\x1b" not in error  # it cannot forge a line or paint a terminal
    assert len(error) <= ERROR_MAX_CHARS + 64
