"""Run the anchors, each in its own process, and return their JSON reports.

- `python_limit`: `python -I -m plugbox.bench.pipe_limit` with this interpreter (see pipe_limit.py).
- `node_worker_threads`: `node --expose-gc node_anchor.js` (shipped as package data), when `node`
  is on PATH and not skipped; otherwise a report that says why it is absent.
- `AnchorSession`: the same two scripts in `serve` mode, kept running and asked for bursts of round
  trips or pipelined requests, so the bench can interleave them with bursts of plugbox's bridge.

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

from plugbox.errors import AnchorError

__all__ = ["AnchorError", "AnchorSession", "node_argv", "node_worker_threads", "python_argv", "python_limit"]

ANCHOR_TIMEOUT_S = 300.0


SIDE_B_ENV = "PLUGBOX_BENCH_SIDE_B_CPU"


def _env(side_b_cpu: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(SIDE_B_ENV, None)
    if side_b_cpu is not None:  # the anchor moves its second side (child / worker thread) there
        env[SIDE_B_ENV] = str(side_b_cpu)
    return env


async def _run_json(argv: list[str], what: str, side_b_cpu: int | None) -> dict[str, Any]:
    env = _env(side_b_cpu)
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


_NODE_SCRIPT = importlib.resources.files("plugbox.bench") / "node_anchor.js"


def python_argv(*args: str) -> list[str]:
    """The command line of the socketpair anchor, run by this interpreter, with `args`."""
    return [sys.executable, "-I", "-m", "plugbox.bench.pipe_limit", *args]


def node_argv(*args: str, flags: tuple[str, ...] = ()) -> list[str] | None:
    """The command line of the Node anchor with `args` (node's own `flags` first); None when
    `node` is not on PATH. (The script is package data, a real file in an editable or wheel
    install.)"""
    node = shutil.which("node")
    return None if node is None else [node, *flags, str(_NODE_SCRIPT), *args]


async def python_limit(
    rtt_n: int, pipelined_total: int, in_flight: int, side_b_cpu: int | None = None
) -> dict[str, Any]:
    argv = python_argv(str(rtt_n), str(pipelined_total), str(in_flight))
    return await _run_json(argv, "python socketpair anchor", side_b_cpu)


async def node_worker_threads(
    rtt_n: int, pipelined_total: int, idle_workers: int, starts: int, *, skip: bool, side_b_cpu: int | None = None
) -> dict[str, Any]:
    if skip:
        return {"anchor": "node-worker_threads", "skipped": "--skip-node"}
    argv = node_argv(str(rtt_n), str(pipelined_total), str(idle_workers), str(starts), flags=("--expose-gc",))
    if argv is None:
        return {"anchor": "node-worker_threads", "skipped": "node is not on PATH"}
    return await _run_json(argv, "node worker_threads anchor", side_b_cpu)


class AnchorSession:
    """One anchor in `serve` mode: `rtt(n)` -> latencies in ns, `pipelined(n)` -> requests/s."""

    def __init__(self, what: str, proc: asyncio.subprocess.Process) -> None:
        self.what = what
        self._proc = proc

    @classmethod
    async def start(cls, argv: list[str], what: str, side_b_cpu: int | None) -> AnchorSession:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=_env(side_b_cpu), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True, limit=16 << 20,
        )
        session = cls(what, proc)
        try:
            if not (await session._read()).get("ready"):
                raise AnchorError(f"{what} did not say it was ready")
        except BaseException:
            await session.close()
            raise
        return session

    async def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        async with asyncio.timeout(ANCHOR_TIMEOUT_S):
            line = await self._proc.stdout.readline()
        if not line:
            raise AnchorError(f"{self.what} exited (code {await self._proc.wait()})")
        try:
            reply: dict[str, Any] = json.loads(line)
        except ValueError as exc:
            raise AnchorError(f"{self.what} printed something that is not JSON: {exc}") from None
        if "error" in reply:
            raise AnchorError(f"{self.what}: {reply['error']}")
        return reply

    async def _ask(self, command: str) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(command.encode() + b"\n")
        await self._proc.stdin.drain()
        return await self._read()

    async def rtt(self, n: int) -> list[int]:
        lat = (await self._ask(f"rtt {n}")).get("lat_ns")
        if not isinstance(lat, list) or len(lat) != n:
            raise AnchorError(f"{self.what}: no latency list for rtt {n}")
        return [int(x) for x in lat]

    async def pipelined(self, n: int) -> float:
        per_s = (await self._ask(f"pipe {n}")).get("per_s")
        if not isinstance(per_s, int | float):
            raise AnchorError(f"{self.what}: no rate for pipe {n}")
        return float(per_s)

    async def close(self) -> None:
        proc = self._proc
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()  # end of commands: the anchor exits by itself
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except (TimeoutError, asyncio.CancelledError) as exc:  # it did not exit, or we are cancelled
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
