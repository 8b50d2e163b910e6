"""The bridge messages, version 2: one typed msgspec Struct per operation, in two tagged unions
(one per direction). The single source of truth for both processes.

Every message is encoded as a msgpack array, tag first (`array_like`): the field names never go on
the wire, which keeps a hook round trip as cheap as the untyped envelope of version 1 was, while
decoding *is* validation down to each field's type. Host requests carry an `id` that the worker's
`Result` echoes; worker capability `Call`s carry an `id` that the host's `Reply` echoes.

What a worker sends whose shape depends on the operation (a call's `args`, a `Result`'s `value`,
a log line's `fields`) travels as one encoded msgpack value (`msgspec.Raw`): the host decodes the
envelope, then that value into the schema of what it answers (the verb's argument Struct, say),
or under a byte cap when no schema bounds it. A frame of small containers can cost ~70x its
bytes as Python objects: the host never decodes a worker's value into `Any` blindly.
See docs/internals.md for the protocol in prose.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

__all__ = [
    "NIL",
    "PROTOCOL_VERSION",
    "Call",
    "ConfigChange",
    "Health",
    "Hello",
    "Hook",
    "HostMsg",
    "HostRequest",
    "LayerResult",
    "Lifecycle",
    "LifecycleMethod",
    "Load",
    "Log",
    "Ping",
    "Pong",
    "Register",
    "Reply",
    "Result",
    "Search",
    "Shutdown",
    "Webhook",
    "WorkerMsg",
    "encoded",
]

PROTOCOL_VERSION = 3

NIL = msgspec.Raw(b"\xc0")  # msgpack nil, encoded
_value_encoder = msgspec.msgpack.Encoder()


def encoded(value: Any) -> msgspec.Raw:
    """`value` as one encoded msgpack value, for a `msgspec.Raw` field."""
    return NIL if value is None else msgspec.Raw(_value_encoder.encode(value))

LifecycleMethod = Literal["on_load", "on_enable", "on_disable", "on_unload"]


class _Msg(msgspec.Struct, array_like=True, tag_field="k", omit_defaults=False, forbid_unknown_fields=True):
    """Extra trailing items are refused, not ignored: a frame is exactly one version's message."""


class LayerResult(msgspec.Struct, frozen=True):
    """One confinement layer as the worker applied it (or could not)."""

    name: str
    applied: bool
    detail: str = ""
    skipped: bool = False  # an opt-in layer the policy did not ask for


# -- host → worker: requests, each answered by one Result with the same id --
class Load(_Msg, tag="load"):
    """Import the plugin's `main` and instantiate its Plugin subclass. `webhook_routes` are the
    routes the host lets it register (none without `webhook:ingress`); `search_provider` whether it
    may register one. The worker only checks membership: the rule lives on the host."""

    id: int
    plugin_id: str
    plugin_dir: str
    main: str
    config: dict[str, Any]
    webhook_routes: list[str]
    search_provider: bool


class Lifecycle(_Msg, tag="life"):
    id: int
    method: LifecycleMethod


class Hook(_Msg, tag="hook"):
    """Run the handler the worker registered as `handler_id` for one hook event."""

    id: int
    handler_id: int
    event: str
    data: Any
    session_id: str | None
    timestamp: datetime
    source: str
    config: dict[str, Any]


class ConfigChange(_Msg, tag="config"):
    id: int
    config: dict[str, Any]


class Health(_Msg, tag="health"):
    id: int


class Webhook(_Msg, tag="webhook"):
    id: int
    route: str
    request: dict[str, Any]


class Search(_Msg, tag="search"):
    id: int
    query: dict[str, Any]


# -- host → worker: the rest --
class Reply(_Msg, tag="rep"):
    """Answer to a worker's capability Call. `error_kind` is 'error' or 'timeout'."""

    id: int
    ok: bool
    value: Any = None
    error: str | None = None
    error_kind: Literal["error", "timeout"] = "error"


class Ping(_Msg, tag="ping"):
    id: int


class Shutdown(_Msg, tag="bye"):
    pass


HostRequest = Load | Lifecycle | Hook | ConfigChange | Health | Webhook | Search
HostMsg = Load | Lifecycle | Hook | ConfigChange | Health | Webhook | Search | Reply | Ping | Shutdown


# -- worker → host --
class Hello(_Msg, tag="hello"):
    """First frame of a worker: protocol version and the confinement layers it applied."""

    version: int
    pid: int
    layers: list[LayerResult]
    error: str | None = None  # set when confinement failed; the worker exits right after


class Call(_Msg, tag="call"):
    """A capability call. It carries no claim about which hook it serves: the host works that out
    from the hook requests it has in flight to this worker (a worker could lie)."""

    id: int
    verb: str
    args: msgspec.Raw = NIL  # decoded by the host into the verb's argument Struct


class Result(_Msg, tag="res"):
    """Answer to a host request. For a Hook, `value` is None (continue, data unchanged) or
    {continue, data, error}."""

    id: int
    ok: bool
    value: msgspec.Raw = NIL  # decoded by the host for the request it answers
    error: str | None = None


class Register(_Msg, tag="reg"):
    """register_hook / register_webhook / register_search_provider from the plugin."""

    what: Literal["hook", "webhook", "search"]
    name: str = ""
    handler_id: int = 0
    priority: int = 100


class Log(_Msg, tag="log"):
    level: str
    message: str
    fields: msgspec.Raw = NIL  # a dict or nil; decoded by the host only under a byte cap


class Pong(_Msg, tag="pong"):
    id: int


WorkerMsg = Hello | Call | Result | Register | Log | Pong
