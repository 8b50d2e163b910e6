"""Meta's WhatsApp Cloud API wire shapes, as msgspec Structs: the webhook notification the Graph
platform POSTs to us, and the answers of `POST /{version}/{phone_number_id}/messages`.

Decoding *is* validation: a body that does not fit these shapes is refused before any of it is used.
Only the fields plugbox reads are declared; Meta adds fields over time and unknown ones are ignored,
so a new Graph version does not break intake. Each message and status inside a notification is kept
`msgspec.Raw` at first and decoded on its own (`decode_message`, `decode_status`), so one item of a
shape we do not know is skipped and counted without losing its neighbours.

This module owns shapes only: no I/O, no engine state, no plugbox message dicts.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "Change",
    "ChangeValue",
    "Contact",
    "Entry",
    "GraphError",
    "GraphErrorBody",
    "InboundMessage",
    "Metadata",
    "Notification",
    "SendResponse",
    "Status",
    "decode_message",
    "decode_notification",
    "decode_send_response",
    "decode_status",
    "graph_error",
]


class Profile(msgspec.Struct):
    name: str = ""


class Contact(msgspec.Struct):
    wa_id: str
    profile: Profile = msgspec.field(default_factory=Profile)


class Metadata(msgspec.Struct):
    phone_number_id: str
    display_phone_number: str = ""


class TextBody(msgspec.Struct):
    body: str


class Context(msgspec.Struct):
    id: str
    # `from` is a Python keyword; Meta's name is kept on the wire.
    from_: str = msgspec.field(default="", name="from")


class InboundMessage(msgspec.Struct):
    """One entry of `value.messages[]`. Only `type == "text"` carries `text`."""

    id: str
    from_: str = msgspec.field(name="from")
    timestamp: str
    type: str
    text: TextBody | None = None
    context: Context | None = None


class StatusError(msgspec.Struct):
    code: int
    title: str = ""
    message: str = ""


class Status(msgspec.Struct):
    """One entry of `value.statuses[]`: what happened to a message we sent."""

    id: str
    status: str  # sent | delivered | read | failed (Meta may add more; unknown ones are skipped)
    timestamp: str
    recipient_id: str = ""
    errors: list[StatusError] = msgspec.field(default_factory=list)


class ChangeValue(msgspec.Struct):
    metadata: Metadata
    messaging_product: str = "whatsapp"
    contacts: list[Contact] = msgspec.field(default_factory=list)
    messages: list[msgspec.Raw] = msgspec.field(default_factory=list)
    statuses: list[msgspec.Raw] = msgspec.field(default_factory=list)


class Change(msgspec.Struct):
    field: str
    value: ChangeValue | None = None


class Entry(msgspec.Struct):
    id: str
    changes: list[Change] = msgspec.field(default_factory=list)


class Notification(msgspec.Struct):
    object: str
    entry: list[Entry] = msgspec.field(default_factory=list)


class SentMessage(msgspec.Struct):
    id: str


class SendResponse(msgspec.Struct):
    """The 200 answer to a send: `messages[0].id` is the new message's `wamid`."""

    messages: list[SentMessage]


class GraphErrorBody(msgspec.Struct):
    message: str = ""
    type: str = ""
    code: int = 0
    error_subcode: int | None = None
    fbtrace_id: str = ""


class GraphError(msgspec.Struct):
    """Any non-2xx Graph answer: `{"error": {"message", "type", "code", ...}}`."""

    error: GraphErrorBody


_notification = msgspec.json.Decoder(Notification)
_message = msgspec.json.Decoder(InboundMessage)
_status = msgspec.json.Decoder(Status)
_send_response = msgspec.json.Decoder(SendResponse)
_graph_error = msgspec.json.Decoder(GraphError)


def decode_notification(raw: bytes) -> Notification:
    """A webhook body; msgspec.DecodeError (a ValidationError included) when it is not one."""
    return _notification.decode(raw)


def decode_message(raw: msgspec.Raw) -> InboundMessage:
    return _message.decode(raw)


def decode_status(raw: msgspec.Raw) -> Status:
    return _status.decode(raw)


def decode_send_response(raw: bytes) -> SendResponse:
    return _send_response.decode(raw)


def graph_error(raw: bytes) -> GraphErrorBody | None:
    """Meta's error object from a failed call, or None when the body is not one (a proxy's HTML page)."""
    try:
        return _graph_error.decode(raw).error
    except msgspec.DecodeError:
        return None
