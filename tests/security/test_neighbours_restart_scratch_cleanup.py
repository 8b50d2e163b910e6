"""What a worker's restart makes the host's event loop spend on the scratch directory it leaves.

Every worker start and stop empties the plugin's scratch directory (`WorkerRuntime.start` and
`stop`, plugbox/bridge/client.py). Where the `scratch` layer cannot mount a size-limited tmpfs (a
host neither root nor able to give each worker a user namespace, or `worker_scratch_bytes = 0`),
scratch is a plain directory on the host's data filesystem, bounded per file only: the worker may
create as many files there as it likes. The host removed them with `shutil.rmtree` on its event
loop, so a plugin that fills its scratch with empty files and then exits made its restart (which
the host does on its own, with backoff) stall the whole host, every plugin's hooks, calls, ingress
and the API, for as long as the kernel takes to unlink them, charged to nobody. The breaker
forgives a crash after `breaker_stable_ms` (60 s), so the plugin may do it once a minute for ever,
each time with as many files as its lifecycle budget lets it create.

Measured before the fix (100,000 empty files on this machine's disk): the host's loop stood still
for about 1 s during the restart, against a few ms without the files.

A real confined worker, with `worker_scratch_bytes = 0` (what a host without the layer gets).
Asserts: the attack ran (the files were on the host's disk, the worker died and was restarted by
the host), the host's loop never stood still for long meanwhile, and the scratch directory is
empty again after the restart.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from plugbox.host import Host
from plugbox.lifecycle import Status
from tests.security.conftest import WritePlugin, enable, wait_for

pytestmark = pytest.mark.timeout(180)

FILES = 100_000
# The loop's longest stand-still allowed while the host restarts the worker: removing the files
# stalled it about 1 s before the fix; a restart without them stalls it a few ms.
STALL_MAX_S = 0.3

FILLER = f"""
import asyncio
import os
from plugbox.sdk import Plugin


class Filler(Plugin):
    async def on_enable(self, ctx):
        if await ctx.storage.get("made") is not None:
            return  # the host restarted it: once is the attack
        for i in range({FILES}):
            os.close(os.open(str(i), os.O_CREAT | os.O_WRONLY, 0o600))  # cwd is scratch
        await ctx.storage.set("made", len(os.listdir(".")))
        asyncio.get_running_loop().call_later(0.5, os._exit, 3)
"""


@pytest.mark.parametrize("settings_overrides", [{
    "worker_scratch_bytes": 0,  # no tmpfs: scratch is on the host's disk, as on a host without the layer
    "lifecycle_budget_ms": 60000,
}])
async def test_a_restart_does_not_stall_the_host_loop_on_the_files_the_worker_left_in_scratch(
        host: Host, write_plugin: WritePlugin) -> None:
    started = time.monotonic()
    entry = await enable(host, write_plugin(FILLER, id="filler", permissions=["storage:use"]))
    filled_in = time.monotonic() - started
    scratch = host.settings.data_path / "scratch" / "filler"
    assert host.storage.get("filler", "made") == (True, FILES)  # the attack ran: the files are on the host's disk
    assert sum(1 for _ in scratch.iterdir()) == FILES
    first_pid = entry.runtime.pid if entry.runtime is not None else None

    stalls: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = loop.time()
            stalls.append(now - last - 0.005)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    # The worker exits on its own; the host tears it down and restarts it.
    await wait_for(lambda: entry.status == Status.ENABLED and entry.runtime is not None
                   and entry.runtime.pid not in (None, first_pid), within=60)
    await asyncio.sleep(0.2)
    stop.set()
    await ticking
    worst = max(stalls)
    print(f"\nfiles: {FILES} (made in {filled_in:.1f} s); longest loop stall during the restart: "
          f"{worst * 1000:.0f} ms; failures: {entry.record.consecutive_failures}")
    assert entry.record.consecutive_failures == 1  # it was the worker's death, charged to it
    assert worst < STALL_MAX_S, f"the host's loop stood still {worst:.2f} s removing the worker's scratch files"
    assert not any(scratch.iterdir())  # and the files are gone all the same
