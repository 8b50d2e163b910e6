"""The hook event names (SPEC §4), in one place.

The manifest validator checks a plugin's declared `hooks` against `EVENTS`, and the hook bus refuses
to register a handler for any name outside it. This module holds names only: no behaviour, no imports
from the rest of plugbox, so both the host and the worker side may import it.
"""

from __future__ import annotations

import re

__all__ = [
    "EVENTS",
    "INGRESS_EVENTS",
    "MESSAGE_EVENTS",
    "NOTIFICATION_EVENTS",
    "SESSION_EVENTS",
    "VETO_EVENTS",
    "WEBHOOK_EVENTS",
    "unsupported_openwa_event",
]

SESSION_EVENTS: frozenset[str] = frozenset(
    {
        "session:created",
        "session:starting",
        "session:ready",
        "session:qr",
        "session:disconnected",
        "session:error",
        "session:deleted",
    }
)

MESSAGE_EVENTS: frozenset[str] = frozenset(
    {
        "message:received",
        "message:sending",
        "message:sent",
        "message:failed",
        "message:ack",
        "message:persisted",
        "message:deleted",
    }
)

WEBHOOK_EVENTS: frozenset[str] = frozenset(
    {
        "webhook:before",
        "webhook:queued",
        "webhook:delivered",
        "webhook:after",
        "webhook:error",
    }
)

INGRESS_EVENTS: frozenset[str] = frozenset({"ingress:error"})

EVENTS: frozenset[str] = SESSION_EVENTS | MESSAGE_EVENTS | WEBHOOK_EVENTS | INGRESS_EVENTS

# Events where a handler's `stop` changes what the caller does: it vetoes the send
# (`message:sending`) or cancels that one webhook delivery (`webhook:before`).
VETO_EVENTS: frozenset[str] = frozenset({"message:sending", "webhook:before"})

# Everything else: `stop` only ends the handler chain, the caller proceeds regardless.
NOTIFICATION_EVENTS: frozenset[str] = EVENTS - VETO_EVENTS

# OpenWA fires `message:annotation-*` events that plugbox has no counterpart for: a manifest or a
# handler naming one is told it is not supported here, rather than that the name is unknown.
_ANNOTATION = re.compile(r"message:annotation-[a-z0-9-]{1,64}", re.ASCII)


def unsupported_openwa_event(event: str) -> bool:
    """An OpenWA event name plugbox knows and does not fire (the annotation family)."""
    return _ANNOTATION.fullmatch(event) is not None
