"""Make the zygote's whole heap immortal before it starts forking workers (CPython 3.12+).

Why: a forked worker shares the zygote's memory pages until it writes to them. CPython writes to an
object whenever it takes or drops a reference to it (the count lives in the object's header), so
merely *using* a pre-imported module, function or constant in a worker copies the page it lives on.
`gc.freeze()` stops the cyclic collector's own writes, but not these. Since PEP 683 (CPython 3.12)
an object whose count holds the interpreter's "immortal" value is never counted again: with the
whole pre-imported heap immortal, a worker reads it without copying, and an idle confined worker
costs about 3 MB of PSS instead of about 4.9 MB (figures in docs/performance.md).

Why by hand: CPython has no public call to make an existing object immortal (its own startup
objects, such as None or small ints, are immortal from birth), and no library does it. The one
write this module makes is the documented header field `ob_refcnt`, set to exactly the value the
interpreter gave its own immortal objects (read from `None`, so the value follows the version).

Safety: an immortal object is never freed. Everything reached here was imported or built to live
for the zygote's (and so every worker's) whole life; garbage is collected first. The walk reaches
objects through the collector's view of the heap (`gc.get_objects`, `gc.get_referents`) plus the
members of code objects, which the collector does not traverse. Objects created after the call
(everything a worker or a plugin allocates) are counted as usual. Interpreters without immortal
objects (3.11), versions not yet measured (3.14+), free-threaded builds (a different header) and
32-bit builds are left untouched: `supported()` says so, and `immortalize_heap()` then does nothing.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import sysconfig
import types

__all__ = ["immortal_refcount", "immortalize_heap", "supported"]


def immortal_refcount() -> int:
    """The count the interpreter gives its own immortal objects (None is one of them)."""
    return sys.getrefcount(None)


def supported() -> bool:
    """True on a 64-bit, GIL-ful CPython 3.12 or 3.13, where `None` is immortal. (3.14 changed how
    immortal counts are kept; it is left alone until measured.)"""
    return (
        sys.implementation.name == "cpython"
        and (3, 12) <= sys.version_info[:2] <= (3, 13)
        and sys.maxsize > 2**32
        and not sysconfig.get_config_var("Py_GIL_DISABLED")
        and immortal_refcount() >= 2**31
    )


def _members(obj: object) -> list[object]:
    if isinstance(obj, types.CodeType):  # not traversed by the collector: walk what it holds
        # Only stored members: co_code, co_varnames and the like are built on first access, and
        # asking for them here would grow the heap by a copy of every function's bytecode.
        return [obj.co_consts, obj.co_names, obj.co_filename, obj.co_name, obj.co_qualname,
                obj.co_linetable, obj.co_exceptiontable]
    return gc.get_referents(obj)


def immortalize_heap() -> int:
    """Make every object reachable from the collector's view of the heap immortal; return how many
    objects changed. Call once, after the last import and `gc.collect()`, before `gc.freeze()`."""
    if not supported():
        return 0
    immortal = immortal_refcount()
    roots = gc.get_objects()  # taken first: the walk's own set and stack below are not in it
    seen: set[int] = set()
    stack: list[object] = roots
    changed = 0
    while stack:
        obj = stack.pop()
        key = id(obj)
        if key in seen:
            continue
        seen.add(key)
        refcount = ctypes.c_ssize_t.from_address(key)
        if refcount.value != immortal:
            refcount.value = immortal
            changed += 1
        stack.extend(_members(obj))
    return changed
