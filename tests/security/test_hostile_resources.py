"""Hostile plugins against resources: memory, CPU, disk, file descriptors, log and stdout floods,
capability-call and registration floods. The worker's rlimits turn the first ones into errors in
the worker (MemoryError, EFBIG, EMFILE); liveness kills a handler's CPU runaway and the CPU
watchdog a background one; the host's own caps
(log rate limit, calls in flight, registrations) keep floods from reaching host services.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import time
from typing import Any

import pytest

from plugbox.lifecycle import Status

from .conftest import SESSION, Attack, alive, assert_refused, reported, wait_for

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="confined workers are Linux-only"),
              pytest.mark.timeout(60)]


async def test_hostile_memory_bomb_ends_in_memory_error(attack: Attack) -> None:
    run = await attack.run("""
        def attack(ctx, cfg):
            hoard = []
            try:
                while True:
                    hoard.append(bytearray(16 << 20))
            except MemoryError:
                got = len(hoard) * 16
                hoard.clear()
                raise MemoryError(f"stopped after {got} MiB") from None
    """)
    assert_refused(run.result, types=("MemoryError",))
    assert int(run.result["error"].split("after ")[1].split()[0]) <= 256
    assert alive(run.pid) and run.entry.status == Status.ENABLED  # the worker lives on
    await attack.aftermath()


async def test_hostile_mmap_bomb_is_refused(attack: Attack) -> None:
    run = await attack.run("""
        import mmap
        def attack(ctx, cfg):
            maps = [mmap.mmap(-1, 64 << 20) for _ in range(64)]  # 4 GiB
            return len(maps)
    """)
    assert_refused(run.result, errno.ENOMEM, types=("MemoryError",))
    await attack.aftermath()


@pytest.mark.parametrize("settings_overrides", [{"hook_budget_ms": 300, "liveness_window_ms": 300}])
async def test_hostile_cpu_runaway_is_killed_by_liveness(attack: Attack) -> None:
    run, outcome = await attack.run_in_hook("""
        import signal
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
            signal.signal(sig, signal.SIG_IGN)
        def attack(ctx, cfg):
            while True:
                pass
    """)
    assert outcome.timed_out == ["hostile"]
    assert run.entry_storage("started") == (True, True)  # it ran, and never finished
    assert run.entry_storage("result") == (False, None)
    await wait_for(lambda: not alive(run.pid), within=3)
    await wait_for(lambda: any("liveness" in line["message"] for line in run.entry.logs.recent), within=3)
    await attack.aftermath()


# A limit well under what two spinning threads take even on a busy machine (on two cores at a load
# of 8 each runnable thread gets about a quarter of a CPU): the watchdog's rule is under test, not
# how much CPU the test machine can spare. An idle worker stays near 0 %.
@pytest.mark.parametrize("settings_overrides", [{"worker_cpu_window_ms": 1000, "worker_cpu_limit_percent": 15}])
async def test_hostile_background_cpu_burner_with_a_responsive_loop_is_killed(attack: Attack) -> None:
    """Two threads spin forever while the event loop answers every hook and ping on time: no hook
    overruns, so only the CPU watchdog can see it."""
    run = await attack.run("""
        import threading
        def burn():
            while True:
                pass
        def attack(ctx, cfg):
            for _ in range(2):
                threading.Thread(target=burn, daemon=True).start()
            return "burning"
    """)
    assert run.result["value"] == "burning"
    outcome = await attack.host.dispatch("message:ack", {"id": "m1"}, SESSION)
    assert not outcome.errors and not outcome.timed_out  # the loop itself stays responsive
    await wait_for(lambda: not alive(run.pid), within=10)
    await wait_for(lambda: any("runaway: used" in line["message"] and "of a CPU" in line["message"]
                               for line in run.entry.logs.recent), within=3)
    await attack.aftermath()


@pytest.mark.parametrize("settings_overrides", [{"hook_budget_ms": 300, "liveness_window_ms": 300}])
async def test_hostile_cpu_runaway_forging_pongs_is_still_killed(attack: Attack) -> None:
    """The spinning handler blocks the event loop, but a thread of its own answers every ping it
    can guess by writing Pong frames straight onto the channel. A pong is supposed to prove the
    event loop runs; a runaway that forges them must not live on."""
    run, outcome = await attack.run_in_hook("""
        import threading, time, msgspec, struct
        def forge():
            while True:
                frames = b""
                for i in range(1, 200):
                    body = msgspec.msgpack.encode(["pong", i])
                    frames += struct.pack("!I", len(body)) + body
                raw_send(CTX[0], frames)
                time.sleep(0.05)
        CTX = []
        def attack(ctx, cfg):
            CTX.append(ctx)
            threading.Thread(target=forge, daemon=True).start()
            while True:
                pass
    """)
    try:
        assert outcome.timed_out == ["hostile"]
        assert run.entry_storage("started") == (True, True)
        await wait_for(lambda: not alive(run.pid), within=3)
    finally:
        os.kill(run.pid, signal.SIGKILL) if alive(run.pid) else None  # do not let teardown wait on it
    await attack.aftermath()


@pytest.mark.parametrize("settings_overrides", [{"worker_file_size_bytes": 1 << 20}])
async def test_hostile_big_file_in_scratch_stops_at_the_file_size_limit(attack: Attack) -> None:
    run = await attack.run("""
        def attack(ctx, cfg):
            chunk = b"x" * (256 << 10)
            written = 0
            with open("fill.bin", "wb", buffering=0) as f:
                while written < (64 << 20):
                    written += f.write(chunk)
            return written
    """)
    assert_refused(run.result, errno.EFBIG)
    assert alive(run.pid)
    await attack.aftermath()


@pytest.mark.parametrize("settings_overrides", [{"worker_file_size_bytes": 1 << 20}])
async def test_hostile_disk_fill_with_many_files_is_bounded(attack: Attack) -> None:
    """RLIMIT_FSIZE bounds one file; a plugin writing many files must still not be able to fill
    the host's disk (the scratch dir lives on the data dir's file system)."""
    free_before = shutil.disk_usage(attack.host.settings.data_path).free
    run = await attack.run("""
        def attack(ctx, cfg):
            chunk = b"x" * (1 << 20)
            total = 0
            for i in range(64):  # 64 files of the 1 MiB limit: 64 MiB
                with open(f"fill-{i}.bin", "wb", buffering=0) as f:
                    total += f.write(chunk)
            return total
    """)
    scratch = attack.host.settings.data_path / "scratch" / "hostile"
    used = sum(p.stat().st_size for p in scratch.iterdir()) if scratch.exists() else 0
    try:
        assert_refused(run.result, errno.EDQUOT, errno.ENOSPC, errno.EFBIG)
        assert used < 16 << 20, f"the plugin wrote {used >> 20} MiB to the host's disk"
    finally:
        assert free_before > 0
        await attack.aftermath()


async def test_hostile_fd_exhaustion_then_still_answers(attack: Attack) -> None:
    run, _outcome = await attack.run_in_hook("""
        HOARD = []
        def attack(ctx, cfg):
            try:
                while True:
                    HOARD.append(os.open(".", os.O_RDONLY | os.O_DIRECTORY))
            except OSError as exc:
                raise OSError(exc.errno, f"stopped after {len(HOARD)} fds") from None
    """)
    assert_refused(run.result, errno.EMFILE)
    assert int(run.result["error"].split("after ")[1].split()[0]) < 256
    # Every fd is still held; the worker still answers (its channel was open before).
    again = await attack.fire("m2")
    assert reported(again)["outcome"]["errno"] == errno.EMFILE and not again.timed_out
    await attack.aftermath()


async def test_hostile_log_flood_is_rate_limited_and_the_host_stays_responsive(attack: Attack) -> None:
    run, _outcome = await attack.run_in_hook("""
        def attack(ctx, cfg):
            for i in range(50_000):
                ctx.logger.info(f"flood {i}", n=i)
            for i in range(50_000):
                print(f"print flood {i}")
            return "flooded"
    """)
    assert run.result["ok"] is True  # the flood itself is allowed; its effect is capped
    started = time.monotonic()
    await attack.host.dispatch("session:ready", {}, SESSION)
    assert time.monotonic() - started < 1
    await wait_for(lambda: run.entry.logs.dropped > 90_000, within=10)
    relayed = [line for line in run.entry.logs.recent if "flood" in line["message"]]
    assert len(relayed) <= attack.host.settings.log_lines_per_window
    await attack.aftermath()


async def test_hostile_huge_log_line_is_truncated(attack: Attack) -> None:
    run = await attack.run("""
        def attack(ctx, cfg):
            ctx.logger.error("A" * (8 << 20))
            print("B" * (8 << 20))
            return "sent"
    """)
    assert run.result["ok"] is True
    await wait_for(lambda: sum(1 for line in run.entry.logs.recent if line["message"][:1] in "AB") >= 1, within=3)
    cap = attack.host.settings.log_line_max_chars
    assert all(len(line["message"]) <= cap + 20 for line in run.entry.logs.recent)
    await attack.aftermath()


async def test_hostile_raw_writes_to_stdout_and_stderr_go_to_dev_null(
    attack: Attack, capfd: pytest.CaptureFixture[str]
) -> None:
    run = await attack.run("""
        def attack(ctx, cfg):
            marker = b"HOSTILE-RAW-OUTPUT\\n" * 4096
            for fd in (0, 1, 2):
                try:
                    os.write(fd, marker)
                except OSError:
                    pass
            return [os.fstat(fd).st_rdev for fd in (0, 1, 2)]
    """)
    assert run.result["value"] == [os.stat("/dev/null").st_rdev] * 3
    out, err = capfd.readouterr()
    assert "HOSTILE-RAW-OUTPUT" not in out + err
    assert not any("HOSTILE-RAW-OUTPUT" in line["message"] for line in run.entry.logs.recent)
    await attack.aftermath()


@pytest.mark.parametrize("settings_overrides", [{"storage_quota_bytes": 1 << 20}])
async def test_hostile_storage_flood_hits_the_quota(attack: Attack) -> None:
    run = await attack.run("""
        async def attack(ctx, cfg):
            for i in range(64):
                await ctx.storage.set(f"k{i}", "x" * (256 << 10))
            return "stored 16 MiB"
    """)
    assert_refused(run.result, types=("CapabilityError",))
    assert "quota" in run.result["error"]
    assert attack.host.storage.usage("hostile") <= 1 << 20
    await attack.aftermath()


async def test_hostile_capability_call_flood_is_capped_in_flight(attack: Attack) -> None:
    run = await attack.run("""
        async def attack(ctx, cfg):
            from plugbox.sdk import CapabilityError
            calls = [ctx.messages.send_text("s1", "c1", f"spam {i}") for i in range(500)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            refused = [r for r in results if isinstance(r, CapabilityError)]
            return {"refused": len(refused), "sample": str(refused[0]) if refused else None}
    """, permissions=["storage:use", "messages:send"])
    value: dict[str, Any] = run.result["value"]
    assert value["refused"] > 0 and "in flight" in value["sample"]
    assert len(attack.host.engine.sent) <= 500
    await attack.aftermath()


async def test_hostile_registration_flood_is_capped(attack: Attack) -> None:
    run = await attack.run("""
        def attack(ctx, cfg):
            for i in range(20_000):
                ctx.register_hook("session:ready", lambda hook: None, priority=i)
            return "registered"
    """)
    assert run.result["ok"] is True
    regs = [r for r in attack.host.bus._by_event.get("session:ready", ()) if r.plugin_id == "hostile"]
    assert len(regs) <= 1024
    await attack.aftermath()


@pytest.mark.parametrize("settings_overrides", [{"worker_memory_bytes": 64 << 20}])
async def test_hostile_memory_bomb_in_a_thread_leaves_the_host_whole(attack: Attack) -> None:
    host_rss_before = _rss()
    run = await attack.run("""
        import threading
        def attack(ctx, cfg):
            box = {}
            def grab():
                hoard = []
                try:
                    while True:
                        hoard.append(b"y" * (4 << 20))
                except MemoryError as exc:
                    box["error"] = len(hoard)
            t = threading.Thread(target=grab)
            t.start()
            t.join()
            raise MemoryError(f"thread stopped after {box.get('error')} chunks")
    """)
    assert_refused(run.result, types=("MemoryError",))
    assert _rss() - host_rss_before < 32 << 20
    await attack.aftermath()


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
