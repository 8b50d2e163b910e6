"""What a capability handler is given: the calling plugin (`Caller`) and the host services (`Services`).

Its own module so that the verb table (`verbs`) and the router that runs it (`router`) both depend
on it and not on each other. Nothing here checks or calls anything.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from plugbox.capabilities.messages import MessageService
from plugbox.engines.base import Engine
from plugbox.permissions import SessionScope
from plugbox.storage.conversations import ConversationStore
from plugbox.storage.kv import PluginStorage

if TYPE_CHECKING:
    from plugbox.net.fetch import FetchService

__all__ = ["Caller", "Services"]


class Caller(Protocol):
    """What the router needs to know about the calling plugin."""

    @property
    def plugin_id(self) -> str: ...

    @property
    def permissions(self) -> Collection[str]: ...

    @property
    def scope(self) -> SessionScope: ...


@dataclass(slots=True)
class Services:
    engine: Engine
    messages: MessageService
    storage: PluginStorage
    # Optional so that a router can be built for the verbs it needs (tests, tools); a verb whose
    # service is missing is refused as "not available on this host".
    net: FetchService | None = None
    conversations: ConversationStore | None = None
