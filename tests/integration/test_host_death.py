"""Workers never outlive the host, even when the host is SIGKILLed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PR_SET_CHILD_SUBREAPER = 36

pytestmark = pytest.mark.timeout(60)

# Run in a subprocess that is a child subreaper, so the orphans of the killed host are re-parented
# to it and reaped there (PID 1 of a container need not reap), without touching pytest's process.
REAPER = r"""
import ctypes, json, os, signal, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
host = subprocess.Popen([sys.executable, sys.argv[1]], stdout=subprocess.PIPE, text=True)
info = json.loads(host.stdout.readline())
os.kill(host.pid, signal.SIGKILL)
host.wait()
deadline = time.monotonic() + 10
pids = [info["zygote"], *info["workers"]]
def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
while time.monotonic() < deadline:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
    if all(gone(p) for p in pids):
        break
    time.sleep(0.05)
try:
    while os.waitpid(-1, os.WNOHANG)[0] > 0:
        pass
except ChildProcessError:
    pass
print(json.dumps({**info, "survivors": [p for p in pids if os.path.exists(f"/proc/{p}")]}))
"""


def test_no_worker_or_zygote_survives_a_sigkilled_host() -> None:
    out = subprocess.run([sys.executable, "-c", REAPER, str(HERE / "_host_then_die.py")],
                         capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(info["workers"]) == 2, "the host must have started both workers before it was killed"
    assert info["survivors"] == [], f"processes outlived the host: {info}"
