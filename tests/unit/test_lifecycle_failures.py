"""Failure accounting, restart backoff and the circuit breaker (SPEC §5), on a manual clock: a
crashed worker is restarted after a doubling, capped delay; N consecutive failures open the breaker
and nothing restarts until the operator enables the plugin; a liveness kill that ends a hook
timeout is one failure, not two. Worker deaths are reported the way a worker runtime reports them,
through `RuntimeDeps.on_failure`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plugbox.host import Host
from plugbox.lifecycle import Status
from plugbox.observer import HostObserver
from plugbox.sdk import Plugin
from plugbox.settings import load_settings

MANIFEST = {"id": "probe", "name": "probe", "version": "1.0.0", "type": "extension", "main": "builtin"}


class ManualClock:
    """Time moves only when the test says so; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._waiting: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return 1_800_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append((self.now + seconds, fut))
        await fut

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [f for at, f in self._waiting if at <= self.now]
        self._waiting = [(at, f) for at, f in self._waiting if at > self.now]
        for fut in due:
            if not fut.done():
                fut.set_result(None)


class Deaths(HostObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def worker_failed(self, plugin_id: str, restarting: bool, reason: str) -> None:
        self.seen.append((plugin_id, restarting))


class Counting(Plugin):
    starts = 0

    def on_enable(self, ctx: Any) -> None:
        Counting.starts += 1


async def until(predicate: Callable[[], bool]) -> None:
    """Let the loop run (database writes go through a thread) until `predicate` holds."""
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - no event announces these states (writes run on a thread)
            await asyncio.sleep(0.001)


@pytest.fixture
async def rig(tmp_path: Path) -> Any:
    hosts: list[Host] = []

    async def make(**overrides: Any) -> tuple[Host, ManualClock, Deaths]:
        clock, deaths = ManualClock(), Deaths()
        settings = load_settings(environ={}, data_dir=str(tmp_path / "data"), **overrides)
        host = Host(settings, bundled=False, clock=clock, observers=[deaths])
        hosts.append(host)
        await host.start()
        Counting.starts = 0
        host.register_builtin(Counting, MANIFEST)
        await host.enable("probe")
        return host, clock, deaths

    yield make
    for host in hosts:
        await host.stop()


def crash(host: Host, *, counted: bool = False) -> None:
    """What a worker runtime does when its worker dies."""
    host.manager.deps.on_failure(host.manager.get("probe"), "worker exited with signal 9", counted)


async def test_a_crashed_plugin_restarts_only_after_the_backoff(rig: Any) -> None:
    host, clock, _ = await rig(restart_backoff_initial_ms=200)
    crash(host)
    await until(lambda: clock.sleeps == [0.2])
    view = host.plugin("probe")
    assert view.status == Status.ERROR and "restarting after failure" in (view.error or "")
    assert Counting.starts == 1  # not before the delay
    clock.advance(0.2)
    await until(lambda: host.plugin("probe").status == Status.ENABLED)
    assert Counting.starts == 2
    assert host.plugin("probe").consecutive_failures == 1  # stands until a success resets it


async def test_restart_delays_double_and_stop_at_the_maximum(rig: Any) -> None:
    host, clock, _ = await rig(restart_backoff_initial_ms=200, restart_backoff_max_ms=500, breaker_threshold=10)
    for n in range(1, 5):
        crash(host)
        await until(lambda n=n: len(clock.sleeps) == n)
        clock.advance(clock.sleeps[-1])
        await until(lambda: host.plugin("probe").status == Status.ENABLED)
    assert clock.sleeps == [0.2, 0.4, 0.5, 0.5]


async def test_the_breaker_opens_at_the_threshold_and_nothing_restarts(rig: Any) -> None:
    host, clock, deaths = await rig(breaker_threshold=3)
    for n in (1, 2):
        crash(host)
        await until(lambda n=n: len(clock.sleeps) == n)
        clock.advance(60)
        await until(lambda: host.plugin("probe").status == Status.ENABLED)
    crash(host)
    await until(lambda: host.plugin("probe").worker_pid is None and host.manager.get("probe").runtime is None)
    view = host.plugin("probe")
    assert view.status == Status.ERROR
    assert "circuit breaker open after 3 consecutive failures" in (view.error or "")
    clock.advance(3600)
    await asyncio.sleep(0)
    assert len(clock.sleeps) == 2 and Counting.starts == 3  # no third restart was even scheduled
    assert deaths.seen == [("probe", True), ("probe", True), ("probe", False)]
    assert (await host.enable("probe")).consecutive_failures == 0  # the operator's enable resets it


async def test_a_liveness_kill_that_ends_a_hook_timeout_counts_once(rig: Any) -> None:
    host, clock, _ = await rig()
    host.manager.hook_timed_out("probe")
    assert host.plugin("probe").consecutive_failures == 1
    crash(host, counted=True)  # the kill the timeout's ping led to
    await until(lambda: len(clock.sleeps) == 1)
    assert host.plugin("probe").consecutive_failures == 1
    clock.advance(60)
    await until(lambda: host.plugin("probe").status == Status.ENABLED)
    crash(host)  # an unrelated crash is a failure of its own
    assert host.plugin("probe").consecutive_failures == 2


async def test_a_disable_during_the_backoff_cancels_the_restart(rig: Any) -> None:
    host, clock, _ = await rig()
    crash(host)
    await until(lambda: len(clock.sleeps) == 1)
    assert (await host.disable("probe")).status == Status.DISABLED
    clock.advance(60)
    await asyncio.sleep(0)
    assert host.plugin("probe").status == Status.DISABLED and Counting.starts == 1


async def test_a_death_reported_by_a_replaced_plugin_is_ignored(rig: Any) -> None:
    host, _, deaths = await rig()
    stale = host.manager.get("probe")
    await host.disable("probe")
    host.manager.forget("probe")
    host.register_builtin(Counting, MANIFEST)
    await host.enable("probe")
    host.manager.deps.on_failure(stale, "old worker exited", False)
    assert host.plugin("probe").status == Status.ENABLED and deaths.seen == []


async def test_shutdown_logs_each_plugin_whose_stop_failed(rig: Any, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    host, _, _ = await rig()
    host.register_builtin(Counting, {**MANIFEST, "id": "other"})
    await host.enable("other")
    observe = host.registry.observe

    async def failing_observe(record: Any) -> None:
        if record.plugin_id == "probe":
            raise OSError("disk full")
        await observe(record)

    monkeypatch.setattr(host.registry, "observe", failing_observe)  # shutdown stores status only
    with caplog.at_level(logging.ERROR, logger="plugbox.lifecycle"):
        await host.stop()
    assert "plugin probe: shutdown failed: shutdown raised OSError: disk full" in caplog.text
    assert "plugin other" not in caplog.text
    assert host.manager.get("other").runtime is None and host.manager.get("probe").runtime is None


# -- crash loops and handler errors (issue 12 class 8, SPEC §5) --

async def answer_a_hook(host: Host) -> None:
    """What the hook bus does when one of the plugin's handlers answers."""
    host.manager.record_success("probe")


async def restart_after(host: Host, clock: ManualClock, n: int) -> None:
    await until(lambda: len(clock.sleeps) == n)
    clock.advance(clock.sleeps[-1])
    await until(lambda: host.plugin("probe").status == Status.ENABLED)


async def test_a_plugin_that_answers_between_quick_crashes_still_opens_the_breaker(rig: Any) -> None:
    host, clock, deaths = await rig(breaker_threshold=5, breaker_stable_ms=60_000,
                                    restart_backoff_initial_ms=100, restart_backoff_max_ms=100)
    for n in range(1, 5):
        clock.advance(0.3)
        await answer_a_hook(host)  # it serves a message or two...
        clock.advance(0.1)
        crash(host)  # ...and dies 0.4 s after each start
        await restart_after(host, clock, n)
    assert host.plugin("probe").consecutive_failures == 4  # the successes did not forgive them
    clock.advance(0.4)
    crash(host)
    await until(lambda: host.manager.get("probe").runtime is None)
    view = host.plugin("probe")
    assert view.status == Status.ERROR and "circuit breaker open after 5 consecutive failures" in (view.error or "")
    assert view.last_error is not None and view.last_error.kind == "breaker_open"
    clock.advance(3600)
    await asyncio.sleep(0)
    assert Counting.starts == 5 and deaths.seen[-1] == ("probe", False)  # no sixth start


async def test_a_success_after_the_stable_period_forgives_the_failures(rig: Any) -> None:
    host, clock, _ = await rig(breaker_stable_ms=60_000)
    crash(host)
    await restart_after(host, clock, 1)
    clock.advance(59.9)
    await answer_a_hook(host)
    assert host.plugin("probe").consecutive_failures == 1  # not yet stable
    clock.advance(0.1)
    await answer_a_hook(host)
    assert host.plugin("probe").consecutive_failures == 0


async def test_a_crash_after_a_stable_run_starts_a_new_series(rig: Any) -> None:
    host, clock, _ = await rig(breaker_threshold=2, breaker_stable_ms=60_000)
    crash(host)
    await restart_after(host, clock, 1)
    clock.advance(120)  # ran stably, without answering any hook
    crash(host)
    await until(lambda: len(clock.sleeps) == 2)
    view = host.plugin("probe")
    assert view.consecutive_failures == 1 and "restarting after failure" in (view.error or "")


async def test_consecutive_handler_errors_open_the_breaker_and_remove_the_hooks(rig: Any) -> None:
    host, clock, _ = await rig(handler_error_threshold=3)
    host.bus.register("probe", "message:received", lambda _ctx: None)
    for _ in range(2):
        host.manager.handler_failed("probe", "hook message:received: ValueError: bad")
    await answer_a_hook(host)  # a success in between: the count starts over
    for _ in range(2):
        host.manager.handler_failed("probe", "hook message:received: ValueError: bad")
    assert host.plugin("probe").status == Status.ENABLED
    host.manager.handler_failed("probe", "hook message:received: ValueError: bad")
    await until(lambda: host.manager.get("probe").runtime is None)
    view = host.plugin("probe")
    assert view.status == Status.ERROR
    assert "circuit breaker open after 3 consecutive handler errors" in (view.error or "")
    assert host.bus.handlers("message:received") == []
    assert view.failure_counts["handler_error"] == 5 and view.failure_counts["breaker_open"] == 1
    clock.advance(3600)
    await asyncio.sleep(0)
    assert Counting.starts == 1 and clock.sleeps == []  # no restart: the operator re-enables it


async def test_every_failure_class_sets_last_error_with_class_and_time(rig: Any) -> None:
    host, clock, _ = await rig()
    host.manager.capability_denied("probe", "plugin 'probe' lacks permission 'messages:send'")
    last = host.plugin("probe").last_error
    assert last is not None and last.kind == "permission_denied" and "'messages:send'" in last.message
    assert last.at == clock.time()
    host.manager.hook_timed_out("probe")
    assert host.plugin("probe").last_error.kind == "hook_timeout"  # type: ignore[union-attr]
    crash(host)
    assert host.plugin("probe").last_error.kind == "worker_crash"  # type: ignore[union-attr]
    assert "signal 9" in host.plugin("probe").last_error.message  # type: ignore[union-attr]
    kinds = [f.kind for f in host.plugin("probe").recent_failures]
    assert kinds == ["permission_denied", "hook_timeout", "worker_crash"]


async def test_an_oom_kill_is_its_own_class_and_counts_like_a_crash(rig: Any) -> None:
    host, clock, _ = await rig(restart_backoff_initial_ms=200)
    reason = ("worker closed the channel (killed by SIGKILL: the kernel's OOM killer, the memory total "
              "of all workers (workers_memory_total_bytes) reached)")
    host.manager.deps.on_failure(host.manager.get("probe"), reason, False, oom=True)
    view = host.plugin("probe")
    assert view.last_error is not None and view.last_error.kind == "worker_oom"
    assert "OOM killer" in view.last_error.message and "workers_memory_total_bytes" in view.last_error.message
    assert view.failure_counts == {"worker_oom": 1}  # not also a worker_crash
    assert view.consecutive_failures == 1  # toward the breaker like any worker death
    await until(lambda: clock.sleeps == [0.2])  # and restarted after the backoff like one
