"""Permission names and the one place where capability permission and session scope are checked.

Both tiers call `check_permission` / `check_session`: built-ins through the in-process context,
untrusted plugins through the bridge router. The checks run on the host, before any service is touched.
The session rule is `SessionScope.covers`; hook dispatch (the loader) and `check_session` both call
it, so which sessions a plugin sees events from and which it may act on cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from plugbox.errors import CapabilityError, PermissionDenied

__all__ = ["PERMISSIONS", "SessionScope", "check_permission", "check_session"]

PERMISSIONS: frozenset[str] = frozenset(
    {
        "messages:send",
        "engine:read",
        "storage:use",
        "net:fetch",
        "conversation:send",
        "conversation:read",  # its own conversation records and handover states, read-only
        "webhook:ingress",
        "search:provide",
        "hooks:modify",  # rewrite hook data or halt an event (SPEC §4); without it a handler observes
    }
)


def check_permission(plugin_id: str, granted: Collection[str], needed: str, verb: str) -> None:
    """Raise PermissionDenied unless `needed` is among the plugin's granted permissions."""
    if needed not in granted:
        raise PermissionDenied(
            f"plugin {plugin_id!r} lacks permission {needed!r} required by {verb}"
        )


class SessionScope:
    """What a plugin may touch, session-wise: the static manifest list, the operator's active
    sessions (when session-scoped), and whether the session has a live engine."""

    __slots__ = ("_any", "active", "allowed", "session_scoped")

    def __init__(
        self, allowed: Collection[str], session_scoped: bool, active: Collection[str]
    ) -> None:
        self.allowed = frozenset(allowed)
        self.session_scoped = session_scoped
        self.active = frozenset(active)
        self._any = "*" in self.allowed

    def permits(self, session_id: str) -> bool:
        """The manifest's static `sessions` list allows `session_id` (config cannot widen it)."""
        return self._any or session_id in self.allowed

    def covers(self, session_id: str) -> bool:
        """The plugin acts on `session_id`: the manifest allows it and, when session-scoped, the
        operator has the plugin active there. Called for every hook dispatch, so kept to two set
        lookups; `check_session` is the same rule with the reason spelled out, plus liveness."""
        return (self._any or session_id in self.allowed) and (
            not self.session_scoped or session_id in self.active
        )


def check_session(
    plugin_id: str,
    scope: SessionScope,
    session_id: str,
    is_live: Callable[[str], bool],
) -> None:
    """Raise CapabilityError unless the plugin may act on `session_id` right now: `scope.covers`
    it and it has a live engine. The message says which part failed."""
    if not scope.covers(session_id):
        if not scope.permits(session_id):
            raise CapabilityError(
                f"session {session_id!r} is not in the manifest sessions of plugin {plugin_id!r}"
            )
        raise CapabilityError(f"plugin {plugin_id!r} is not active on session {session_id!r}")
    if not is_live(session_id):
        raise CapabilityError(f"session {session_id!r} has no live engine")
