"""One Cloud API session (a phone number id) and its bounded memory of what the engine has seen:
messages in both directions (by id, oldest first) and the contacts Meta named in notifications.

The memory answers the verbs the Cloud API has no endpoint for; it is bounded by count and by text
bytes, the oldest dropped first, so a flood of long messages costs at most the configured bound.
No I/O and no events here: the engine decides what to remember and when.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Message", "Session"]

Message = dict[str, Any]


def _text_bytes(message: Message) -> int:
    return len(str(message["body"]).encode("utf-8", "surrogatepass"))


@dataclass
class Session:
    id: str
    max_messages: int
    max_text_bytes: int
    me: str | None = None  # "<digits>@c.us" once a notification names our display number
    status: str = "created"  # created | ready | disconnected
    messages: OrderedDict[str, Message] = field(default_factory=OrderedDict)
    contacts: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    _text_bytes: int = 0

    @property
    def live(self) -> bool:
        return self.status == "ready"

    def remember(self, message: Message) -> None:
        """Keep `message` as the newest, dropping the oldest past either bound."""
        old = self.messages.pop(message["id"], None)
        if old is not None:
            self._text_bytes -= _text_bytes(old)
        self.messages[message["id"]] = message
        self._text_bytes += _text_bytes(message)
        while len(self.messages) > self.max_messages or self._text_bytes > self.max_text_bytes:
            _, dropped = self.messages.popitem(last=False)
            self._text_bytes -= _text_bytes(dropped)

    def remember_contact(self, contact_id: str, name: str) -> None:
        self.contacts.pop(contact_id, None)
        self.contacts[contact_id] = {"id": contact_id, "name": name, "number": contact_id.partition("@")[0],
                                     "isGroup": False}
        while len(self.contacts) > self.max_messages:
            self.contacts.popitem(last=False)
