"""The handover gate: a chat handed to a human stops reaching the bots (SPEC §3 `ctx.handover`).

A plugin that bridges chats to people (a helpdesk, a CRM inbox) links its conversation to a chat
(`ctx.mappings.upsert`, or by sending through `ctx.conversations.send`) and then says who handles
it with `ctx.handover.set(conversation_id, state)`. While at least one plugin holds a chat in
`human`, that chat's `message:received` skips the handlers of every *bot*; `bot` or `closed` from
every such plugin gives the chat back.

Who is who, from what the manifests grant (no new manifest field, nothing a plugin claims):
- the **handover owners** of a chat are the plugins holding it in `human`: they keep receiving
  its messages (they forward them to the person now answering);
- a **bot** is any other plugin that could answer the customer: one granted `messages:send` or
  `conversation:send`, built-ins included (the bundled auto-reply is a bot);
- every other plugin (loggers, metrics, moderation without a send permission) still observes.

Only an owner that is running gates: a helpdesk plugin disabled or crashed forwards nothing, and a
chat nobody answers is worse than one a bot answers, so its chats reach the bots until it is back
(its `human` states are kept, and gate again once it is enabled).

Only `message:received` is gated: what the owner sends on a human's behalf still passes
`message:sending`, where moderation must keep seeing it. This module decides; the store
(`plugbox.storage.conversations`) remembers, the hook bus skips.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from plugbox.storage.conversations import ConversationStore

__all__ = ["BOT_PERMISSIONS", "HandoverGate"]

BOT_PERMISSIONS = frozenset({"messages:send", "conversation:send"})


class HandoverGate:
    def __init__(self, store: ConversationStore, bots: Callable[[], frozenset[str]],
                 running: Callable[[str], bool]) -> None:
        self._store = store
        self._bots = bots  # the plugin ids holding a BOT_PERMISSIONS permission now
        self._running = running  # whether a plugin is enabled and running now

    def skipped(self, session_id: str, message: Mapping[str, Any]) -> frozenset[str]:
        """The plugins whose `message:received` handlers this message must not reach."""
        chat = message.get("chatId")
        if not isinstance(chat, str):
            return frozenset()
        owners = frozenset(p for p in self._store.human_owners(session_id, chat) if self._running(p))
        if not owners:
            return frozenset()
        return self._bots() - owners
