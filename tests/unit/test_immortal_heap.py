"""The zygote's heap is made immortal so forked workers read it without copying it (3.12+).

Each check runs in a fresh interpreter: immortalizing is for life, never in the test process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from plugbox.worker import immortal

needs_immortal = pytest.mark.skipif(not immortal.supported(), reason="this interpreter has no immortal objects")


def _run(script: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                         timeout=60, check=True)
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return result


@needs_immortal
def test_what_existed_before_is_never_counted_again_and_what_comes_after_is() -> None:
    result = _run("""
        import gc, json, sys
        import email.utils  # a module and its functions, built before the call
        from plugbox.worker import immortal

        def constant_holder():
            return 12345678901234567890

        gc.collect()
        changed = immortal.immortalize_heap()
        value = immortal.immortal_refcount()
        const = constant_holder.__code__.co_consts  # reachable only through the code object
        name = constant_holder.__code__.co_filename
        fn = email.utils.formatdate
        before = [sys.getrefcount(o) for o in (fn, email.utils.__dict__, const, name)]
        held = [fn, fn, email.utils.__dict__, const, const, name]  # taking references...
        after = [sys.getrefcount(o) for o in (fn, email.utils.__dict__, const, name)]
        fresh = object()
        fresh_count = sys.getrefcount(fresh)
        again = immortal.immortalize_heap()
        print(json.dumps({"changed": changed, "value": value, "before": before, "after": after,
                          "fresh": fresh_count, "again": again}))
    """)
    value = result["value"]
    assert isinstance(result["changed"], int) and result["changed"] > 1000
    # ...changes no count: a function, a module's namespace, a code object's constants and its
    # file name all hold the interpreter's immortal value, before and after new references.
    assert result["before"] == [value] * 4
    assert result["after"] == [value] * 4
    assert result["fresh"] == 2  # an object made afterwards is counted as usual
    assert isinstance(result["again"], int) and 0 < result["again"] < result["changed"]


@needs_immortal
def test_objects_made_immortal_stay_usable() -> None:
    result = _run("""
        import gc, json
        from plugbox.worker import immortal
        table = {"k": [1, 2, 3]}
        gc.collect()
        immortal.immortalize_heap()
        table["k"].append(4)            # mutable objects stay mutable
        table["new"] = "x" * 10
        del table["k"]
        for _ in range(3):
            gc.collect()                # the collector copes with immortal objects
        print(json.dumps({"table": table}))
    """)
    assert result["table"] == {"new": "x" * 10}


def test_without_immortal_objects_nothing_is_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(immortal, "supported", lambda: False)
    probe = object()
    count = sys.getrefcount(probe)
    assert immortal.immortalize_heap() == 0
    assert sys.getrefcount(probe) == count
