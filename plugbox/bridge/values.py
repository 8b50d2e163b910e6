"""What a worker sends with no schema to bound it, decoded under a byte cap (wire v3).

A result's `value` and a log line's `fields` arrive encoded (`msgspec.Raw`). Decoded into Python
objects, a frame of small containers costs the host ~70x its bytes, so each is decoded only up to
a cap (a hook answer's data: its event's payload cap, `plugbox.payloads`, which the bus would
refuse past anyway; otherwise the settings `plain_decode_max_bytes`, `log_fields_max_bytes`) and through
`protocol.value_decoder` (no extension type but timestamps). A result past its cap is refused (the
request fails; a hook answer becomes its handler's error); fields past theirs are replaced by a
note. This module decodes; it sends nothing and keeps no state.
"""

from __future__ import annotations

from typing import Any

import msgspec

from plugbox.errors import PluginError
from plugbox.payloads import PAYLOADS, Undecoded
from plugbox.protocol import NIL, Log, Result, value_decoder
from plugbox.sdk import HookResult

__all__ = ["hook_data_cap", "hook_result", "log_fields", "result_value"]

_decode_value = value_decoder().decode


def result_value(msg: Result, max_bytes: int) -> Any:
    """The value of a worker's Result, decoded only if it is at most `max_bytes` long: nothing
    bounds its shape, and small containers cost the host ~70x their bytes once decoded."""
    if len(msg.value) > max_bytes:
        raise PluginError(f"result of {len(msg.value)} bytes is larger than the host decodes "
                          f"without a schema ({max_bytes} bytes, plain_decode_max_bytes)")
    return _decode_value(msg.value)


class _Answer(msgspec.Struct, forbid_unknown_fields=True):
    """A hook answer on the wire, its data kept encoded until its size is known."""

    continue_: bool = msgspec.field(name="continue")
    data: msgspec.Raw = NIL
    error: str | None = None


_decode_answer = value_decoder(_Answer).decode


def hook_data_cap(event: str, default: int) -> int:
    """The most hook data the host decodes: its event's payload cap (the bus's payload check
    refuses more anyway); `default` for an event without one."""
    spec = PAYLOADS.get(event)
    return default if spec is None else spec.cap


def hook_result(msg: Result, data_cap: int) -> HookResult:
    """A worker's hook answer other than a plain continue: {continue, data, error} as the bus
    wants it; anything else is an error. Data longer than `data_cap` is not decoded: it reaches
    the bus as `Undecoded`, which the payload check refuses (so an observer's is ignored, and a
    modifier's is its error, or a veto where the event fails closed)."""
    if not msg.ok:
        return HookResult(error=msg.error or "hook handler failed without a message")
    try:
        answer = _decode_answer(msg.value)
    except (msgspec.DecodeError, ValueError, RecursionError):  # ValidationError is a DecodeError
        return HookResult(error="hook result is not {continue, data, error}")
    data: Any
    if len(answer.data) > data_cap:
        data = Undecoded(len(answer.data))
    else:
        try:
            data = _decode_value(answer.data)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            return HookResult(error=f"hook result could not be decoded: {str(exc)[:200]}")
    return HookResult(data=data, stop=not answer.continue_, error=answer.error)


def log_fields(msg: Log, max_bytes: int) -> Any:
    """A log line's fields, decoded only under `max_bytes` (the relay shows a few hundred
    characters of them at most); larger or undecodable ones are replaced by a note saying so."""
    size = len(msg.fields)
    if size > max_bytes:
        return {"fields": f"<{size} bytes, over the {max_bytes}-byte cap: not shown>"}
    try:
        return _decode_value(msg.fields)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return {"fields": "<undecodable: not shown>"}
