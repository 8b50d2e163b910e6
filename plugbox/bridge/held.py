"""What an answer held back for a worker costs the host, in memory (issue 12: payload size).

While the queue to a worker is above its high-water mark, the channel holds the answers of calls
that complete meanwhile (`Channel.answer`). The calls in flight bound how many wait, not how large
they are, and the worker picks how large they are (32 listings of 10,000 long keys held ~180 MB).
`memory_of` is how the channel weighs one before it holds it: the size of the host's Python
objects for the value, walked only until the caller's limit is passed (the caller only needs to
know whether it fits). Objects shared with a host service are counted as if the answer owned them:
the estimate errs toward refusing. This module only measures; it holds and sends nothing.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

__all__ = ["memory_of"]

_RAW_OVERHEAD = 48  # the Raw object itself, about


def memory_of(value: Any, stop_at: int) -> int:
    """Bytes the objects of `value` take, or some number past `stop_at` once that is passed."""
    total = 0
    stack = [value]
    while stack:  # (ends even on a cycle: every object adds its size, and past stop_at it stops)
        item = stack.pop()
        kind = type(item)
        # msgspec.Raw is a view (its buffer is not in its own size), and msgspec 0.22's
        # Raw.__sizeof__ answers garbage: count what it shows
        total += len(item) + _RAW_OVERHEAD if kind is msgspec.Raw else sys.getsizeof(item)
        if total > stop_at:
            return total
        if kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif isinstance(item, msgspec.Struct):
            stack.extend(getattr(item, name) for name in item.__struct_fields__)
    return total
