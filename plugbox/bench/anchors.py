"""Run the anchors, each in its own process, and return their JSON reports.

- `python_limit`: `python -I -m plugbox.bench.pipe_limit` with this interpreter (see pipe_limit.py).
- `node_worker_threads`: `node --expose-gc node_anchor.js` (shipped as package data), when `node`
  is on PATH and not skipped; otherwise a report that says why it is absent.

Anchors run while no plugbox worker exists, so they do not compete with the system under test.
Every child is killed and reaped on the way out, including when the bench is cancelled (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import os
import shutil
import sys
from typing import Any

__all__ = ["AnchorError", "node_worker_threads", "python_limit"]

ANCHOR_TIMEOUT_S = 300.0


class AnchorError(Exception):
    """An anchor process failed or printed something that is not its report."""


SIDE_B_ENV = "PLUGBOX_BENCH_SIDE_B_CPU"


async def _run_json(argv: list[str], what: str, side_b_cpu: int | None) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop(SIDE_B_ENV, None)
    if side_b_cpu is not None:  # the anchor moves its second side (child / worker thread) there
        env[SIDE_B_ENV] = str(side_b_cpu)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Its own session (uvloop's subprocess_exec has no process_group=): a terminal's Ctrl-C reaches
        # only the bench, which kills the anchor below, so an interrupted run reads as interrupted, not
        # as a failed anchor.
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(ANCHOR_TIMEOUT_S):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # timed out or cancelled: do not leave it running
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise AnchorError(f"{what} exited with {proc.returncode}: {err.decode(errors='replace').strip()[-500:]}")
    try:
        report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise AnchorError(f"{what} printed no JSON report: {exc}") from None
    return report


async def python_limit(
    rtt_n: int, pipelined_total: int, in_flight: int, side_b_cpu: int | None = None
) -> dict[str, Any]:
    argv = [sys.executable, "-I", "-m", "plugbox.bench.pipe_limit", str(rtt_n), str(pipelined_total), str(in_flight)]
    return await _run_json(argv, "python socketpair anchor", side_b_cpu)


async def node_worker_threads(
    rtt_n: int, pipelined_total: int, idle_workers: int, starts: int, *, skip: bool, side_b_cpu: int | None = None
) -> dict[str, Any]:
    if skip:
        return {"anchor": "node-worker_threads", "skipped": "--skip-node"}
    node = shutil.which("node")
    if node is None:
        return {"anchor": "node-worker_threads", "skipped": "node is not on PATH"}
    script = importlib.resources.files("plugbox.bench") / "node_anchor.js"
    with importlib.resources.as_file(script) as path:
        argv = [node, "--expose-gc", str(path), str(rtt_n), str(pipelined_total), str(idle_workers), str(starts)]
        return await _run_json(argv, "node worker_threads anchor", side_b_cpu)
