"""The plain-data rule (SPEC §3): only None, bool, int, float, str, bytes, list, dict with str keys
and timezone-aware datetimes cross between a plugin and the host. Anything else is refused at the
sender, naming the path of the offending value (e.g. `data.items[3]`).

An int is plain only inside the range the wire's msgpack encoding carries (-2**63 .. 2**64-1): a
larger one would otherwise fail deep in the frame encoder with a bare OverflowError that names no
argument.

The rule is shared by both sides of the boundary: the SDK checks what a plugin sends, the worker
what it answers, storage what it keeps. So it lives here, beside `errors`, importing nothing but
`errors`: the worker side may import it (tests/unit/test_layering.py lists it) and so may the host,
without either reaching into the other's package. Plugin authors get it as `plugbox.sdk.check_plain`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from plugbox.errors import PlainDataError

__all__ = ["INT_MAX", "INT_MIN", "MAX_DEPTH", "check_plain"]

MAX_DEPTH = 64
INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1
# int is checked apart: its range is part of the rule.
_SCALARS = (str, float, bool, bytes, type(None))


def check_plain(value: Any, path: str = "value") -> None:
    """Raise PlainDataError naming the first non-plain value under `value`."""
    _check(value, path, 0)


def _check(value: Any, path: str, depth: int) -> None:
    t = type(value)
    if t in _SCALARS:
        return
    if t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise PlainDataError(path, "int outside the 64-bit range plain data carries (-2**63 .. 2**64-1)")
        return
    if depth >= MAX_DEPTH:
        raise PlainDataError(path, f"nested deeper than {MAX_DEPTH} levels")
    if t is list:
        for i, item in enumerate(value):
            if type(item) not in _SCALARS:
                _check(item, f"{path}[{i}]", depth + 1)
        return
    if t is dict:
        for k, item in value.items():
            if type(k) is not str:
                raise PlainDataError(f"{path}[{k!r}]", f"dict key of type {type(k).__name__}; keys must be str")
            if type(item) not in _SCALARS:
                _check(item, f"{path}.{k}", depth + 1)
        return
    if t is datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise PlainDataError(path, "naive datetime; only timezone-aware datetimes are plain data")
        return
    raise PlainDataError(path, f"{t.__name__} is not plain data")
