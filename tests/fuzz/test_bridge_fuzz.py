"""Fuzzing the host side of the bridge (SPEC §6): everything a worker sends is untrusted input.

1. A worker's `Channel` (inside a real WorkerRuntime), fed hypothesis-generated streams (valid
   messages of every kind with arbitrary ids and payloads, undecodable and deeply nested frames,
   raw garbage, arbitrary chunking) over a fake transport: it never raises; its books never grow
   from worker input and every request of the host's still settles; every decodable capability
   call gets exactly one reply; it ends the worker only for a declared length over the cap or past
   the bad-frame threshold.
2. End to end, with real confined workers: one plugin finds its channel socket and writes
   hypothesis-generated garbage frames into it while a second plugin keeps answering hooks; the
   host kills the garbage writer at the bad-frame threshold and the second plugin never notices.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugbox.bridge.channel import MAX_BAD_FRAMES, Channel
from plugbox.bridge.client import WorkerRuntime
from plugbox.engines.loopback import LoopbackEngine
from plugbox.errors import FrameTooLarge
from plugbox.host import Host
from plugbox.lifecycle.entry import PluginEntry
from plugbox.protocol import Call, FrameReader, Hook, HostMsg, Reply, WorkerMsg
from tests.fuzz._strategies import FUZZ, chunked, frame, nested, payloads, worker_msgs
from tests.integration.conftest import CARRY, alive, carrying, enable, host_settings, wait_for

CAP = 1 << 14  # a small frame cap, so that oversized frames are easy to reach
PLUGIN = "fuzzed"
_enc = msgspec.msgpack.Encoder()


class FakeTransport:
    def __init__(self, channel: Channel) -> None:
        self.out = bytearray()
        self.closed = False
        self._channel = channel

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    # The worker always reads everything at once here: no backpressure, nothing paused.
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self._channel.connection_lost(None)  # what the event loop does once the socket is closed

    def close(self) -> None:
        self.abort()


def _write_plugin(root: Path, plugin_id: str, code: str, permissions: list[str]) -> Path:
    d = root / plugin_id
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"id": plugin_id, "name": plugin_id, "version": "1.0.0",
                                                 "type": "extension", "main": "main.py",
                                                 "permissions": permissions}))
    (d / "main.py").write_text(code)
    os.chmod(d, 0o755)
    return d


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.Runner, Host, PluginEntry, Path]]:
    """One loop and one host for every example: a runtime per example is cheap, a host is not."""
    tmp = tmp_path_factory.mktemp("bridge-fuzz")
    with asyncio.Runner() as runner:
        async def start() -> tuple[Host, PluginEntry, Path]:
            s = host_settings(tmp, frame_max_bytes=CAP, log_lines_per_window=10**9)
            h = Host(s, engine=LoopbackEngine(), bundled=False)
            await h.start(restore=False)
            d = _write_plugin(tmp / "plugins", PLUGIN, "", ["storage:use"])
            return h, h.manager.get(h.load_plugin(d).plugin_id), d

        host, entry, plugin_dir = runner.run(start())
        try:
            yield runner, host, entry, plugin_dir
        finally:
            runner.run(host.stop())


def _runtime(host: Host, entry: PluginEntry, plugin_dir: Path) -> tuple[WorkerRuntime, FakeTransport]:
    """A WorkerRuntime whose channel is wired to a fake transport, as if its worker had just connected."""
    rt = WorkerRuntime(entry, host.manager.deps, plugin_dir)
    transport = FakeTransport(rt.channel)
    rt.channel.connection_made(transport)  # type: ignore[arg-type]
    return rt, transport


def _hook(channel: Channel, data: Any = None) -> tuple[asyncio.Future[Any], int]:
    msg = Hook(channel.new_id(), 0, "message:ack", data, None, datetime.now(UTC), "host", {})
    return channel.hook(msg), msg.id


chunk = st.one_of(
    worker_msgs.map(lambda m: bytes(frame(_enc.encode(m)))),
    payloads.map(frame),
    st.binary(min_size=1, max_size=12),  # raw bytes: may desynchronise the stream or declare an oversized frame
)


@FUZZ
@given(chunks=st.lists(chunk, max_size=40), cuts=st.lists(st.integers(0, 10**6), max_size=12),
       waiting=st.integers(0, 4))
def test_worker_channel_survives_any_stream(
    bench: tuple[asyncio.Runner, Host, PluginEntry, Path], chunks: list[bytes], cuts: list[int], waiting: int
) -> None:
    runner, host, entry, plugin_dir = bench
    runner.run(_feed(host, entry, plugin_dir, b"".join(chunks), cuts, waiting))


async def _feed(host: Host, entry: PluginEntry, plugin_dir: Path, stream: bytes, cuts: list[int],
                waiting: int) -> None:
    rt, transport = _runtime(host, entry, plugin_dir)
    channel = rt.channel
    # Requests of the host's own, in flight while the garbage arrives.
    mine = [_hook(channel)[0] for _ in range(waiting)]
    model = FrameReader(WorkerMsg, CAP)  # what the host should have seen, frame by frame
    calls: list[int] = []
    oversized = False
    try:
        for piece in chunked(stream, cuts):
            if channel.stats().gone is not None:
                break
            channel.data_received(piece)  # must never raise
            if not oversized:
                try:
                    calls += [m.id for m in model.feed(piece) if type(m) is Call]
                except FrameTooLarge:
                    oversized = True
            stats = channel.stats()
            assert stats.requests_in_flight <= waiting and stats.hooks_in_flight <= waiting
            assert stats.pings_in_flight == 0
            assert 0 <= rt.calls_in_flight <= host.settings.max_calls_in_flight
        for _ in range(1000):  # the calls being served finish (each answers through the router)
            if not rt.calls_in_flight:
                break
            await asyncio.sleep(0.01)
        assert rt.calls_in_flight == 0
        await asyncio.sleep(0)  # the done-callbacks of the last calls send their replies
        gone = channel.stats().gone
        if gone is not None:
            assert oversized or channel.stats().bad_frames > MAX_BAD_FRAMES, gone
            assert all(fut.done() for fut in mine)  # death rejects every pending request at once
        else:
            assert not oversized
            assert sum(not fut.done() for fut in mine) == channel.stats().requests_in_flight
            channel.flush()
            replies = FrameReader(HostMsg, 1 << 24).feed(bytes(transport.out))
            answered = sorted(m.id for m in replies if type(m) is Reply)
            assert answered == sorted(calls) or rt.refused_calls  # one reply per call (a refusal is a reply)
            assert len(answered) == len(calls)
    finally:
        await rt.stop()
        host.bus.unregister_plugin(entry.plugin_id)  # Register frames may have added hook handlers
        for fut in mine:
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled():
                fut.exception()  # retrieved: WorkerGone at death is the expected answer


# -- what the fuzzing above relies on, pinned down --------------------------------------------------

def _regression(bench: tuple[asyncio.Runner, Host, PluginEntry, Path], check: Any) -> None:
    runner, host, entry, plugin_dir = bench

    async def go() -> None:
        rt, transport = _runtime(host, entry, plugin_dir)
        try:
            await check(rt, transport)
        finally:
            await rt.stop()

    runner.run(go())


def test_a_frame_the_host_fails_to_handle_is_dropped_not_raised(
    bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong while handling one decoded frame (here: the log relay raising, as repr()
    of data nested near the recursion limit can) is a dropped, counted frame, not an exception
    out of the protocol's data_received; the frames after it are still handled."""
    def boom(*_args: Any) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    async def check(rt: WorkerRuntime, _transport: FakeTransport) -> None:
        monkeypatch.setattr(rt.entry.logs, "emit", boom)
        fut, req_id = _hook(rt.channel)
        ok = {"continue": True, "data": None, "error": None}
        rt.channel.data_received(frame(_enc.encode(["log", "info", "m", None]))
                                 + frame(_enc.encode(["res", req_id, True, ok])))
        assert rt.channel.stats().bad_frames == 1 and rt.channel.stats().gone is None
        assert fut.done() and fut.result().error is None

    _regression(bench, check)


def test_a_hook_answer_the_host_cannot_read_still_settles_the_hook(
    bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook's future has left the channel's books by the time its answer is read: if reading
    it fails, the future must still settle, or the hook chain would wait for its whole budget."""
    def unreadable(*_: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded while getting the str of an object")

    async def check(rt: WorkerRuntime, _transport: FakeTransport) -> None:
        monkeypatch.setattr("plugbox.bridge.channel.hook_result", unreadable)
        fut, req_id = _hook(rt.channel)
        rt.channel.data_received(frame(_enc.encode(["res", req_id, True, {"continue": True, "error": ["x"]}])))
        assert fut.done() and "could not be read" in (fut.result().error or "")
        assert rt.channel.stats().requests_in_flight == 0 and rt.channel.stats().hooks_in_flight == 0

    _regression(bench, check)


@pytest.mark.parametrize("bad", [nested(5000), Path("/x"), object()], ids=["too-deep", "path", "object"])
def test_a_request_that_cannot_be_encoded_leaves_nothing_pending(bench: Any, bad: Any) -> None:
    """Regression: hook data that cannot be encoded (a built-in's handler may return a Path, say,
    and the bus hands it to the next handler, a worker) left half a frame in that worker's channel
    buffer, which desynchronised its stream for good, and the request stayed in flight."""
    async def check(rt: WorkerRuntime, transport: FakeTransport) -> None:
        with pytest.raises((RecursionError, TypeError)):
            _hook(rt.channel, bad)
        assert rt.channel.stats().requests_in_flight == 0 and rt.channel.stats().hooks_in_flight == 0
        _hook(rt.channel, "after")
        rt.channel.flush()
        sent = FrameReader(HostMsg, 1 << 20).feed(bytes(transport.out))
        assert [m.data for m in sent if type(m) is Hook] == ["after"]

    _regression(bench, check)


# -- end to end: a real worker writing garbage into its own channel ------------------------------

STEADY = CARRY + """
from plugbox.sdk import Plugin


class Steady(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("webhook:before", self.answer)

    def answer(self, hook):
        return carry(hook, {"n": hook.data["payload"]["data"]["n"] + 1})
"""

GARBAGE = """
import gc
import os
import stat
import time

from plugbox.sdk import Plugin


def channel_fd():
    # The worker server's transport holds the channel; failing that, the one socket among the fds.
    for obj in gc.get_objects():
        if type(obj).__name__ == "WorkerServer" and obj.transport is not None:
            return obj.transport.get_extra_info("socket").fileno()
    socks = []
    for fd in range(1024):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                socks.append(fd)
        except OSError:
            pass
    return socks[0]


def write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            time.sleep(0.001)


class Garbage(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:deleted", self.spew)

    def spew(self, hook):
        fd = channel_fd()
        for payload in hook.data["frames"]:
            write_all(fd, len(payload).to_bytes(4, "big") + payload)
        for _ in range(1000):  # then undecodable frames until the host has had enough
            write_all(fd, b"\\x00\\x00\\x00\\x01\\xc1")
        time.sleep(5)  # the host kills us long before this ends
"""


def test_a_garbage_writing_worker_is_killed_and_its_neighbour_unaffected(tmp_path: Path) -> None:
    with asyncio.Runner() as runner:
        host = Host(host_settings(tmp_path, hook_budget_ms=10000), engine=LoopbackEngine(), bundled=False)
        steady_dir = _write_plugin(tmp_path / "plugins", "steady", STEADY, ["hooks:modify"])
        garbage_dir = _write_plugin(tmp_path / "plugins", "garbage", GARBAGE, [])

        async def start() -> int:
            await host.start(restore=False)
            await host.engine.create_session("s1")
            await host.engine.create_session("s2")
            steady = await enable(host, steady_dir, ("s1",))
            host.load_plugin(garbage_dir)
            await host.set_active_sessions("garbage", ["s2"])
            return steady.runtime.proc.pid  # type: ignore[union-attr]

        steady_pid = runner.run(start())

        @settings(max_examples=4, deadline=None, database=None)
        @given(frames=st.lists(payloads, max_size=40))
        def one_garbage_run(frames: list[bytes]) -> None:
            runner.run(_garbage_run(host, frames))

        try:
            one_garbage_run()
            entry = host.manager.get("steady")
            assert entry.status == "enabled" and entry.record.consecutive_failures == 0
            assert entry.runtime.proc.pid == steady_pid and alive(steady_pid)  # type: ignore[union-attr]
        finally:
            runner.run(host.stop())


async def _garbage_run(host: Host, frames: list[bytes]) -> None:
    await host.enable("garbage")
    garbage = host.manager.get("garbage")
    runtime = garbage.runtime
    assert runtime is not None and runtime.proc is not None
    garbage_pid = runtime.proc.pid
    answered = 0
    stop = asyncio.Event()

    async def neighbour() -> None:
        nonlocal answered
        while not stop.is_set():
            outcome = await host.bus.execute("webhook:before", carrying({"n": answered}, "s1"), "s1")
            assert not outcome.errors and not outcome.timed_out, outcome
            assert outcome.data["payload"]["data"] == {"n": answered + 1}
            answered += 1

    lane = asyncio.ensure_future(neighbour())
    try:
        outcome = await host.bus.execute("message:deleted", {"frames": frames}, "s2")
        assert not outcome.timed_out  # the worker was killed, not waited out: its hook resolves to continue
        await wait_for(lambda: not alive(garbage_pid), within=10)
        # the death is reported once the host has reaped the worker, a moment after the kill
        await wait_for(
            lambda: any("more than 100 undecodable frames" in line["message"] for line in garbage.logs.recent),
            within=5,
        )
        before = answered
        await wait_for(lambda: answered >= before + 20, within=10)  # the neighbour goes on answering
    finally:
        stop.set()
        await lane
        await host.disable("garbage")
