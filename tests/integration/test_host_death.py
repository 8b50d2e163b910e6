"""Workers never outlive the host, even when the host is SIGKILLed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ._subreaper import PRELUDE, REAP

HERE = Path(__file__).parent

pytestmark = pytest.mark.timeout(60)

# Runs as a child subreaper (see _subreaper): starts the host, SIGKILLs it, reports survivors.
REAPER = PRELUDE + REAP + r"""
host = subprocess.Popen([sys.executable, sys.argv[1]], stdout=subprocess.PIPE, text=True)
info = json.loads(host.stdout.readline())
os.kill(host.pid, signal.SIGKILL)
host.wait()
print(json.dumps({**info, "survivors": survivors([info["zygote"], *info["workers"]])}))
"""


def test_no_worker_or_zygote_survives_a_sigkilled_host() -> None:
    out = subprocess.run([sys.executable, "-c", REAPER, str(HERE / "_host_then_die.py")],
                         capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(info["workers"]) == 2, "the host must have started both workers before it was killed"
    assert info["survivors"] == [], f"processes outlived the host: {info}"
