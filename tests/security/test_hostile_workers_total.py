"""Many plugins, each within its own cgroup limits, together past the totals of all workers.

Per-worker limits multiply: three workers each well under their own memory limit can hold more
than the operator gave all workers together (`workers_memory_total_bytes`), and two workers at
their full CPU quota take both CPUs of a 2-CPU host. The totals sit on the workers' common group
(`plugbox-<zygote pid>`), so the kernel settles it inside the workers' subtree: past the memory
total its OOM killer ends the largest worker — charged to that plugin, never the host or a small
victim beside it — and past the CPU total the workers are throttled together while the host's loop
keeps answering.

Each test reads the verdict from the kernel: the OOM kill the zygote found in the killed worker's
own group, the owner group's peak usage, and the CPU time the workers' groups were charged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from plugbox.confine import _cgroupfs
from plugbox.host import Host
from plugbox.lifecycle import Status
from plugbox.lifecycle.entry import PluginEntry
from tests.integration.conftest import CARRY, carrying

from .conftest import SESSION, WritePlugin, alive, enable, reported, wait_for

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(120)]

MiB = 1 << 20
TOTAL = 200 * MiB
BIG = 90 * MiB  # each big one: within its own 128 MiB, but three of them are past the 200 MiB total

GROWER = """
import threading, time
from plugbox.sdk import Plugin

HOARD = []

def grow(target):
    while sum(map(len, HOARD)) < target:
        HOARD.append(b"\\x01" * (4 << 20))  # written, so every page is charged to the group
        time.sleep(0.05)

class Big(Plugin):
    def on_enable(self, ctx):
        threading.Thread(target=grow, args=(%d,), daemon=True).start()
"""

SPINNER = """
import hashlib, threading
from plugbox.sdk import Plugin

def spin():
    block = b"x" * (1 << 20)
    while True:
        hashlib.sha256(block).digest()  # releases the GIL: two threads can use two CPUs

class Spinner(Plugin):
    def on_enable(self, ctx):
        for _ in range(2):
            threading.Thread(target=spin, daemon=True).start()
"""

VICTIM = CARRY + """
from plugbox.sdk import Plugin

class Victim(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("webhook:before", self.answer)

    def answer(self, hook):
        return carry(hook, {"victim": hook.data["payload"]["data"]["n"]})
"""


def group_dirs(pid: int) -> tuple[str, ...]:
    """The worker's own cgroup directories (v1: one per hierarchy)."""
    dirs = tuple(d for d in _cgroupfs.groups_of(pid) if "/plugbox-" in d)
    assert dirs, f"worker {pid} is in no plugbox group"
    return dirs


def worker_pid(entry: PluginEntry) -> int:
    assert entry.runtime is not None and entry.runtime.proc is not None  # type: ignore[attr-defined]
    pid: int = entry.runtime.proc.pid  # type: ignore[attr-defined]
    return pid


async def ask_victim(host: Host, n: int) -> float:
    """One hook round trip to the victim; its latency in seconds."""
    started = time.monotonic()
    outcome = await host.dispatch("webhook:before", carrying({"n": n}), SESSION)
    assert reported(outcome) == {"victim": n}, outcome.errors
    return time.monotonic() - started


def peak_bytes(owner: str) -> int:
    """The most the owner group (all workers together) ever held (v1 max_usage, v2 memory.peak)."""
    for name in ("memory.max_usage_in_bytes", "memory.peak"):
        path = Path(owner, name)
        if path.exists():
            return int(path.read_text())
    raise AssertionError(f"no peak usage file in {owner}")


@pytest.mark.parametrize("settings_overrides", [{"worker_cgroup_memory_bytes": 128 * MiB,
                                                 "workers_memory_total_bytes": TOTAL}])
async def test_workers_past_the_memory_total_lose_the_largest_not_the_victim_or_host(
    host: Host, write_plugin: WritePlugin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    victim = await enable(host, write_plugin(VICTIM, id="victim", permissions=["hooks:modify"]))
    assert victim.status == Status.ENABLED, victim.error
    victim_pid = worker_pid(victim)
    [memory_owner] = {os.path.dirname(d) for d in group_dirs(victim_pid) if Path(d, "memory.oom_control").exists()
                      or Path(d, "memory.events").exists()}
    assert _cgroupfs.read_limits((memory_owner,))["memory"].endswith(f"={TOTAL}")  # the total is set where it binds
    bigs = {}
    for n in range(3):
        entry = await enable(host, write_plugin(GROWER % BIG, id=f"big-{n}", permissions=[]))
        assert entry.status == Status.ENABLED, entry.error
        bigs[worker_pid(entry)] = entry

    await wait_for(lambda: any(not alive(pid) for pid in bigs), within=20)
    killed = {pid for pid in bigs if not alive(pid)}

    def oom_warnings() -> set[int]:
        return {pid for pid in (*bigs, victim_pid)
                if any(f"worker {pid}: the kernel's OOM killer" in r.getMessage() for r in caplog.records)}

    await wait_for(lambda: oom_warnings() >= killed, within=5)
    # The attack ran and was settled inside the workers' subtree: a big one was OOM-killed, charged
    # to it (the kill counted in its own group, its plugin failed), and the total held.
    print(f"memory total {TOTAL >> 20} MiB: OOM-killed {len(killed)} of 3 growing workers; "
          f"all workers' peak {peak_bytes(memory_owner) >> 20} MiB")
    assert peak_bytes(memory_owner) <= TOTAL
    assert oom_warnings() <= set(bigs), "the victim was OOM-killed"
    for pid in killed:
        await wait_for(lambda pid=pid: bigs[pid].status != Status.ENABLED or worker_pid(bigs[pid]) != pid, within=5)
        assert bigs[pid].record.consecutive_failures >= 1
    # The victim and the host survived, and the victim keeps answering.
    assert alive(victim_pid) and worker_pid(victim) == victim_pid
    assert _cgroupfs.oom_kills(group_dirs(victim_pid)) == 0
    for n in range(5):
        assert await ask_victim(host, n) < 5.0
    assert victim.status == Status.ENABLED and victim.record.consecutive_failures == 0
    assert host.zygote.alive
