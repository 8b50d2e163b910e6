"""Many hosts, one PostgreSQL database: a chat handed to a human on one host stops reaching the bots
on every host (docs/postgres.md). The host holding a session's lease runs its hooks and so asks the
handover gate; the plugin that hands the chat over may run its call on another host."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from plugbox.host import Host
from plugbox.settings import load_settings

CHAT = ("default", "15550001234@c.us")


async def _within(check: Callable[[], bool], seconds: float) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_a_handover_set_on_one_host_gates_the_chat_on_the_others(
    tmp_path: Path, make_postgres_url: Callable[[], str]
) -> None:
    url = make_postgres_url()
    a, b = (Host(load_settings(environ={}, data_dir=str(tmp_path / name), database_url=url), bundled=False)
            for name in ("a", "b"))
    try:
        await a.start()
        await b.start()
        assert b.conversations.human_owners(*CHAT) == frozenset()

        await a.conversations.set_handover("helpdesk", "conv-1", "human", chat=CHAT)
        took = await _within(lambda: b.conversations.human_owners(*CHAT) == {"helpdesk"}, seconds=2.0)
        print(f"handover to a human seen on the other host after {took:.2f} s")

        await a.conversations.set_handover("helpdesk", "conv-1", "bot", chat=CHAT)
        await _within(lambda: b.conversations.human_owners(*CHAT) == frozenset(), seconds=2.0)

        # An uninstall on one host forgets the plugin's chats on the others too.
        await b.conversations.set_handover("helpdesk", "conv-2", "human", chat=CHAT)
        await _within(lambda: a.conversations.human_owners(*CHAT) == {"helpdesk"}, seconds=2.0)
        await b.conversations.delete_plugin("helpdesk")
        await _within(lambda: a.conversations.human_owners(*CHAT) == frozenset(), seconds=2.0)
    finally:  # before the database is dropped
        await a.stop()
        await b.stop()
