"""`plugbox doctor` tells the truth about this machine: what it predicts for a policy is what a
real confined worker then does under that policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGBOX = Path(sys.executable).parent / "plugbox"

pytestmark = pytest.mark.timeout(120)


def _run(*args: str, exit_codes: tuple[int, ...] = (0,), **env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOX_")} | env
    out = subprocess.run([str(PLUGBOX), *args, "--json"], capture_output=True, text=True, timeout=100,
                         cwd=REPO, env=environ)
    assert out.returncode in exit_codes, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("env", [
    {},
    {"PLUGBOX_USE_NETNS": "1"},
    {"PLUGBOX_WORKER_CGROUPS": "required"},
    {"PLUGBOX_WORKER_CGROUPS": "required", "PLUGBOX_CGROUP_PARENT": "/no-such-parent"},
], ids=["default", "netns", "cgroups-required", "cgroups-required-unavailable"])
def test_doctor_predicts_whether_a_confined_plugin_starts(env: dict[str, str]) -> None:
    doctor = _run("doctor", **env)
    report = _run("dev", "run", "examples/plugins/echo", exit_codes=(0, 1), **env)  # 1: it could not enable
    predicted = str(doctor["verdict"]).startswith("plugins start fully confined")
    started = report["plugin"]["status"] == "enabled"  # type: ignore[index]
    assert report["exit_code"] == (0 if started else 1)
    assert predicted == started, (doctor["verdict"], report["plugin"])
    if started:
        assert all(layer["applied"] or layer.get("skipped") for layer in report["confinement"])  # type: ignore[union-attr]
