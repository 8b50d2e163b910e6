"""Permission names and the one place where capability permission and session scope are checked.

Both tiers call `check_permission` / `check_session`: built-ins through the in-process context,
untrusted plugins through the bridge router. The checks run on the host, before any service is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from plugbox.errors import CapabilityError

__all__ = ["PERMISSIONS", "SessionScope", "check_permission", "check_session"]

PERMISSIONS: frozenset[str] = frozenset(
    {
        "messages:send",
        "engine:read",
        "storage:use",
        "net:fetch",
        "conversation:send",
        "webhook:ingress",
        "search:provide",
    }
)


def check_permission(plugin_id: str, granted: Collection[str], needed: str, verb: str) -> None:
    """Raise CapabilityError unless `needed` is among the plugin's granted permissions."""
    if needed not in granted:
        raise CapabilityError(
            f"plugin {plugin_id!r} lacks permission {needed!r} required by {verb}"
        )


class SessionScope:
    """What a plugin may touch, session-wise: the static manifest list, the operator's active
    sessions (when session-scoped), and whether the session has a live engine."""

    __slots__ = ("active", "allowed", "session_scoped")

    def __init__(
        self, allowed: Collection[str], session_scoped: bool, active: Collection[str]
    ) -> None:
        self.allowed = frozenset(allowed)
        self.session_scoped = session_scoped
        self.active = frozenset(active)

    def permits(self, session_id: str) -> bool:
        return "*" in self.allowed or session_id in self.allowed


def check_session(
    plugin_id: str,
    scope: SessionScope,
    session_id: str,
    is_live: Callable[[str], bool],
) -> None:
    """Raise CapabilityError unless the plugin may act on `session_id` right now."""
    if not scope.permits(session_id):
        raise CapabilityError(
            f"session {session_id!r} is not in the manifest sessions of plugin {plugin_id!r}"
        )
    if scope.session_scoped and session_id not in scope.active:
        raise CapabilityError(
            f"plugin {plugin_id!r} is not active on session {session_id!r}"
        )
    if not is_live(session_id):
        raise CapabilityError(f"session {session_id!r} has no live engine")
