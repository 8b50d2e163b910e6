"""The statuses a plugin can be in (SPEC §5). A `StrEnum`, so the registry, JSON and metrics labels
keep the plain strings they always had ("installed", "enabled", "disabled", "error")."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Status"]


class Status(StrEnum):
    INSTALLED = "installed"  # registered, never started in this process
    ENABLED = "enabled"  # running: its runtime exists and its hooks are registered
    DISABLED = "disabled"  # stopped by the operator (or at shutdown)
    ERROR = "error"  # failed; `error` says why (enable failure, crash, open breaker)
