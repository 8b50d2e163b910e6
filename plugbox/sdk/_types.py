"""Hook payload and result types shared by both tiers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["HookContext", "HookResult"]


@dataclass(frozen=True, slots=True)
class HookContext:
    """What a hook handler receives. `timestamp` is timezone-aware; `config` is the per-session
    merged config of the plugin."""

    event: str
    data: Any
    session_id: str | None
    timestamp: datetime
    source: str = "host"
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class HookResult:
    """A handler's answer. On the wire: {"continue": not stop, "data": data, "error": error}.
    `data=None` keeps the data unchanged."""

    data: Any = None
    stop: bool = False
    error: str | None = None
