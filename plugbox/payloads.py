"""Each hook event's payload: its schema and byte cap (SPEC §4), the one source of truth.

The host fires every event in `plugbox.events.EVENTS` with data of the shape defined here (the engine
seam, the message service, the webhook and ingress services), and the hook bus checks what a
handler returns against the same shape before the next handler sees it (`problem`). docs/events.md
restates the table for plugin authors; a test keeps the two in step.

The shapes are OpenWA's plugin hook payloads (camelCase keys), so a handler ported from OpenWA reads
the same fields. They are closed: a key no producer emits is refused, so a later handler never meets
a field, a type or a size it was not written for. That is what keeps one plugin from poisoning the
next: data that passes here encodes, crosses the bridge and decodes in any worker. Free-form data
exists in one place only (`webhook:before`'s `payload.data`, the event being delivered), and there
the nesting depth is bounded too.

Besides the shape, a rewrite may not change the keys that say what the event is about (`fixed`):
the session, the send type, the webhook and delivery ids. A handler only ever runs for sessions in
its plugin's scope, so a rewrite stays within that scope.

Host side only: plugins see plain dicts, and nothing here may be imported by the worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from plugbox.events import EVENTS

__all__ = [
    "MAX_OPEN_DEPTH",
    "PAYLOADS",
    "Message",
    "MessageSending",
    "Payload",
    "SendInput",
    "Undecoded",
    "problem",
]

KIB = 1024
MAX_OPEN_DEPTH = 32  # nesting allowed in free-form data; a worker's decoder must never run out of stack


class _Shape(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A closed payload shape: camelCase keys, unknown keys refused."""


# -- messages ----------------------------------------------------------------------------------------


class Message(_Shape):
    """A message as an engine reports it (`plugbox.engines.base`)."""

    id: str
    chat_id: str
    from_: str = msgspec.field(name="from")
    body: str
    from_me: bool
    timestamp: int  # epoch seconds
    to: str | None = None
    type: str = "chat"
    author: str | None = None  # the sender inside a group chat
    quoted_id: str | None = None
    has_media: bool = False


class SendInput(_Shape):
    """What a send asks for: OpenWA's send-text / reply request."""

    chat_id: str
    text: str
    quoted_message_id: str | None = None


class MessageSending(_Shape):
    session_id: str
    input: SendInput
    type: Literal["text", "reply"]

    def __post_init__(self) -> None:
        if (self.type == "reply") != (self.input.quoted_message_id is not None):
            raise ValueError("input.quotedMessageId is required for type 'reply', and only for it")


class MessageFailed(_Shape):
    session_id: str
    error: str
    input: SendInput
    type: Literal["text", "reply"]


class MessageAck(_Shape):
    message_id: str
    status: str  # pending | sent | delivered | read | played | failed
    ack: Annotated[int, msgspec.Meta(ge=-1, le=4)]  # WhatsApp's ack level: -1 error .. 4 played


class MessagePersisted(_Shape):
    session_id: str
    message: Message


class DeletedMessage(_Shape):
    id: str
    chat_id: str


class MessageDeleted(_Shape):
    session_id: str
    message: DeletedMessage


# -- sessions ----------------------------------------------------------------------------------------


class SessionRecord(_Shape):
    """`session:created` and `session:deleted`: the session as the host records it."""

    id: str
    name: str
    status: str | None = None
    phone: str | None = None
    push_name: str | None = None


class SessionRef(_Shape):
    session_id: str


class SessionReady(_Shape):
    phone: str | None
    push_name: str | None = None


class SessionReason(_Shape):
    reason: str


# -- outbound webhooks and ingress ---------------------------------------------------------------------
# As the host's webhook service (`plugbox.webhooks`) fires them: OpenWA's events, with plugbox's
# delivery and subscription ids where OpenWA names a webhook.


class VetoOutcome(_Shape):
    vetoed: bool
    by: str | None = None


class WebhookEnvelope(_Shape):
    """The body a webhook receiver gets. `data` is the event being delivered: free-form plain data."""

    id: str
    event: str
    session_id: str | None
    timestamp: str
    data: Any
    outcome: VetoOutcome | None = None  # on a veto event (`message:sending`)


class WebhookBefore(_Shape):
    delivery_id: str
    subscription_id: str
    event: str
    payload: WebhookEnvelope


class WebhookQueued(_Shape):
    delivery_id: str
    subscription_id: str
    event: str


class WebhookAttempt(_Shape):
    """`webhook:delivered`: one attempt the receiver accepted."""

    delivery_id: str
    subscription_id: str
    event: str
    attempt: int
    status: int | None = None  # the receiver's HTTP status


class WebhookAfter(WebhookAttempt, kw_only=True):
    outcome: str  # delivered | dead


class WebhookError(WebhookAttempt, kw_only=True):
    error: str
    will_retry: bool
    next_attempt_at: float | None = None  # epoch seconds


class IngressError(_Shape):
    plugin_id: str
    route: str
    error: str
    status: int | None = None
    instance_id: str | None = None
    delivery_id: str | None = None
    session_id: str | None = None
    attempt: int | None = None


# -- the table -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payload:
    """One event's contract: its shape, its byte cap (msgpack-encoded, as it crosses the bridge),
    the keys a rewrite must leave as they were, and whether it holds free-form data."""

    schema: type[_Shape]
    cap: int
    fixed: tuple[str, ...] = ()
    open: bool = False


_SESSION = 16 * KIB
_MESSAGE = 512 * KIB  # a 65536-character text at 4 bytes a character, with room for the other fields
_NOTICE = 16 * KIB
_DELIVERY = ("deliveryId", "subscriptionId", "event")

PAYLOADS: Mapping[str, Payload] = {
    "session:created": Payload(SessionRecord, _SESSION, ("id",)),
    "session:starting": Payload(SessionRef, _SESSION, ("sessionId",)),
    "session:ready": Payload(SessionReady, _SESSION),
    "session:qr": Payload(SessionRef, _SESSION, ("sessionId",)),
    "session:disconnected": Payload(SessionReason, _SESSION),
    "session:error": Payload(SessionReason, _SESSION),
    "session:deleted": Payload(SessionRecord, _SESSION, ("id",)),
    "message:received": Payload(Message, _MESSAGE),
    "message:sending": Payload(MessageSending, _MESSAGE, ("sessionId", "type")),
    "message:sent": Payload(Message, _MESSAGE),
    "message:failed": Payload(MessageFailed, _MESSAGE, ("sessionId", "type")),
    "message:ack": Payload(MessageAck, _NOTICE, ("messageId",)),
    "message:persisted": Payload(MessagePersisted, _MESSAGE, ("sessionId",)),
    "message:deleted": Payload(MessageDeleted, _NOTICE, ("sessionId",)),
    "webhook:before": Payload(WebhookBefore, 1024 * KIB, _DELIVERY, open=True),
    "webhook:queued": Payload(WebhookQueued, _NOTICE, _DELIVERY),
    "webhook:delivered": Payload(WebhookAttempt, _NOTICE, _DELIVERY),
    "webhook:after": Payload(WebhookAfter, _NOTICE, _DELIVERY),
    "webhook:error": Payload(WebhookError, _NOTICE, _DELIVERY),
    "ingress:error": Payload(IngressError, _NOTICE, ("pluginId", "route")),
}
assert PAYLOADS.keys() == EVENTS, "every event has a payload, and only events have one"

_encoder = msgspec.msgpack.Encoder()


@dataclass(frozen=True, slots=True)
class Undecoded:
    """Data a worker's handler answered with that the host never decoded, being larger on the wire
    than its event's cap (bridge/values.py): refused here like any other misfit."""

    size: int


def problem(event: str, data: Any, before: Any = None) -> str | None:
    """Why `data` may not replace `before` as the payload of `event`, or None when it may.

    Checked in the order that bounds the work: shape first (a closed shape bounds the size of
    what is walked next), then nesting of free-form data, then the encoded size, then the fixed
    keys. The message names the field at fault, as msgspec reports it (e.g. `$.input.chatId`)."""
    spec = PAYLOADS.get(event)
    if spec is None:
        return f"event {event!r} has no payload schema"
    if isinstance(data, Undecoded):
        return f"{data.size} bytes, over the {spec.cap}-byte cap of {event} (not decoded)"
    try:
        msgspec.convert(data, spec.schema)
    except msgspec.ValidationError as exc:
        return f"not a {event} payload: {exc}"
    if spec.open and not _depth_within(data, MAX_OPEN_DEPTH):
        return f"nested deeper than {MAX_OPEN_DEPTH} levels"
    try:
        size = len(_encoder.encode(data))
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        return f"cannot be encoded ({type(exc).__name__})"
    if size > spec.cap:
        return f"{size} bytes, over the {spec.cap}-byte cap of {event}"
    if isinstance(before, dict):
        for key in spec.fixed:
            if data.get(key) != before.get(key):
                return f"{key!r} may not be changed (was {before.get(key)!r})"
    return None


def _depth_within(value: Any, limit: int) -> bool:
    """True when no list or dict in `value` is nested more than `limit` deep (iterative: the
    point is to refuse what would exhaust a recursive encoder or decoder)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True
