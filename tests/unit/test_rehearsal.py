"""The zygote's rehearsal of a worker's first conversation (plugbox.worker.rehearsal): it runs the
real worker server through load, lifecycle, a hook, a ping and health, and leaves the interpreter
as it found it. Run in a fresh interpreter, as in the zygote: the rehearsal swaps sys.stdout."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
from plugbox.worker import entry, rehearsal
before = (sys.stdout, sys.stderr, list(sys.path))
failed = rehearsal.rehearse(entry.prepare_shared(), entry.new_loop)
print(json.dumps({
    "failed": failed,
    "restored": (sys.stdout, sys.stderr, list(sys.path)) == before,
    "plugin_modules": [m for m in sys.modules if m.startswith("plugbox_plugin_")],
}))
"""

BROKEN = """
import json
from plugbox.worker import entry, rehearsal
rehearsal.PLUGIN_DIR = rehearsal.PLUGIN_DIR.parent / "no-such-plugin"
print(json.dumps({"failed": rehearsal.rehearse(entry.prepare_shared(), entry.new_loop)}))
"""


def _run(script: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return answer


def test_rehearsal_runs_the_whole_conversation_and_restores_the_interpreter() -> None:
    answer = _run(SCRIPT)
    assert answer["failed"] is None  # every request of the conversation was answered ok
    assert answer["restored"] is True
    assert answer["plugin_modules"] == []


def test_a_failed_rehearsal_says_why_instead_of_raising() -> None:
    answer = _run(BROKEN)
    assert isinstance(answer["failed"], str) and "Load failed" in answer["failed"]
