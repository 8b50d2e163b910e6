"""Many hosts, one PostgreSQL database: a chat handed to a human on one host stops reaching the bots
on every host (docs/postgres.md). The host holding a session's lease runs its hooks and so asks the
handover gate; the plugin that hands the chat over may run its call on another host."""

from __future__ import annotations

from plugbox.host import Host
from tests.conftest import within

CHAT = ("default", "15550001234@c.us")


async def test_a_handover_set_on_one_host_gates_the_chat_on_the_others(two_hosts: tuple[Host, Host]) -> None:
    a, b = two_hosts
    assert b.conversations.human_owners(*CHAT) == frozenset()

    await a.conversations.set_handover("helpdesk", "conv-1", "human", chat=CHAT)
    took = await within(lambda: b.conversations.human_owners(*CHAT) == {"helpdesk"}, seconds=2.0)
    print(f"handover to a human seen on the other host after {took:.2f} s")

    await a.conversations.set_handover("helpdesk", "conv-1", "bot", chat=CHAT)
    await within(lambda: b.conversations.human_owners(*CHAT) == frozenset(), seconds=2.0)

    # An uninstall on one host forgets the plugin's chats on the others too.
    await b.conversations.set_handover("helpdesk", "conv-2", "human", chat=CHAT)
    await within(lambda: a.conversations.human_owners(*CHAT) == {"helpdesk"}, seconds=2.0)
    await b.conversations.delete_plugin("helpdesk")
    await within(lambda: a.conversations.human_owners(*CHAT) == frozenset(), seconds=2.0)
