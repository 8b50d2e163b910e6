"""Hook payload and result types shared by both tiers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

__all__ = ["HookContext", "HookResult"]


class HookContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a hook handler receives. `timestamp` is timezone-aware; `config` is the per-session
    merged config of the plugin. Immutable; built once per handler on every dispatch, which is
    why it is a msgspec Struct (about five times cheaper to build than a frozen dataclass)."""

    event: str
    data: Any
    session_id: str | None
    timestamp: datetime
    source: str = "host"
    config: dict[str, Any] = msgspec.field(default_factory=dict)


@dataclass(slots=True)
class HookResult:
    """A handler's answer. On the wire: {"continue": not stop, "data": data, "error": error}.
    `data=None` keeps the data unchanged."""

    data: Any = None
    stop: bool = False
    error: str | None = None
