"""The loopback engine's memory budget: how many bytes of messages it holds, and which go first.

Plugins make the engine keep every message they send (and every inbound message a user injects), in
chats whose ids they choose. Without a bound, one plugin sending large texts to many chats grows the
host without limit. `MessageMemory` keeps three bounds, each dropping the oldest messages first:

- per chat: at most `per_chat_messages` messages and `per_chat_bytes` bytes (the newest message is
  always kept, so a chat never empties itself);
- in total: `total_bytes` over every chat of every session; a chat emptied by that bound is forgotten
  unless it is `pinned` (a group the operator added exists with or without messages).

A message's cost is what the host holds for it: the body's size as a Python string plus a fixed
allowance for the dict and its small fields. This module stores nothing but the accounting and the
eviction order; the chats own their messages.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MESSAGE_OVERHEAD_BYTES", "ChatLog", "MessageMemory", "message_cost"]

# A message dict with its id, chat, sender, recipient and flags, measured with sys.getsizeof on
# CPython 3.11 (the dict and its small strings), rounded up.
MESSAGE_OVERHEAD_BYTES = 800

Message = dict[str, Any]


def message_cost(message: Message) -> int:
    return sys.getsizeof(message["body"]) + MESSAGE_OVERHEAD_BYTES


@dataclass
class ChatLog:
    """One chat's messages, oldest first, with their total cost."""

    id: str
    messages: dict[str, Message] = field(default_factory=dict)
    timestamp: int = 0
    bytes: int = 0
    pinned: bool = False  # kept when emptied (a group the operator added)
    acks: dict[str, int] = field(default_factory=dict)  # receipt levels past "sent", by message id


class MessageMemory:
    """The bounds above, across every chat handed to `add`."""

    def __init__(self, *, per_chat_messages: int, per_chat_bytes: int, total_bytes: int) -> None:
        self.per_chat_messages = per_chat_messages
        self.per_chat_bytes = per_chat_bytes
        self.total_bytes = total_bytes
        self.bytes = 0
        self._live = 0
        # Every message in arrival order with the chat map it lives in; entries whose message is
        # gone already (dropped by its chat's own bound) are skipped when reached, and compacted
        # away once they outnumber the live ones, so the queue stays proportional to what is held.
        self._order: deque[tuple[MutableMapping[str, ChatLog], ChatLog, str]] = deque()

    def add(self, chats: MutableMapping[str, ChatLog], chat: ChatLog, message: Message) -> None:
        """Store `message` in `chat` (a member of `chats`), then drop the oldest past any bound."""
        chat.messages[message["id"]] = message
        cost = message_cost(message)
        chat.bytes += cost
        self.bytes += cost
        self._live += 1
        self._order.append((chats, chat, message["id"]))
        while len(chat.messages) > 1 and (
            len(chat.messages) > self.per_chat_messages or chat.bytes > self.per_chat_bytes
        ):
            self._drop(chat, next(iter(chat.messages)))
        while self.bytes > self.total_bytes and self._order:
            owner, oldest_chat, message_id = self._order.popleft()
            if message_id in oldest_chat.messages:
                self._drop(oldest_chat, message_id)
                if not oldest_chat.messages and not oldest_chat.pinned and owner.get(oldest_chat.id) is oldest_chat:
                    del owner[oldest_chat.id]
        if len(self._order) > 2 * self._live + 64:
            self._order = deque(e for e in self._order if e[2] in e[1].messages)

    def remove(self, chat: ChatLog, message_id: str) -> None:
        """Release one message of `chat` (deleted); its entry in the eviction order is skipped later."""
        self._drop(chat, message_id)

    def forget(self, chats: MutableMapping[str, ChatLog]) -> None:
        """Release every message of `chats` (a deleted session)."""
        for chat in chats.values():
            self.release(chat)

    def release(self, chat: ChatLog) -> None:
        """Release every message of one chat (forgotten by its engine); their places in the
        eviction order are skipped when reached."""
        self.bytes -= chat.bytes
        self._live -= len(chat.messages)
        chat.messages.clear()
        chat.acks.clear()
        chat.bytes = 0

    def _drop(self, chat: ChatLog, message_id: str) -> None:
        cost = message_cost(chat.messages.pop(message_id))
        chat.acks.pop(message_id, None)
        chat.bytes -= cost
        self.bytes -= cost
        self._live -= 1
