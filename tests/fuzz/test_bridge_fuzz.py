"""Fuzzing the host side of the bridge (SPEC §6): everything a worker sends is untrusted input.

1. `WorkerRuntime.received`, fed hypothesis-generated streams (valid messages of every kind with
   arbitrary ids and payloads, undecodable and deeply nested frames, raw garbage, arbitrary
   chunking) over a fake transport: it never raises; its reader buffer stays under one frame cap
   plus a header; its pending maps never grow from worker input and every pending request still
   settles; every decodable capability call gets exactly one reply; it ends the worker only for a
   declared length over the cap or past the bad-frame threshold.
2. End to end, with real confined workers: one plugin finds its channel socket and writes
   hypothesis-generated garbage frames into it while a second plugin keeps answering hooks; the
   host kills the garbage writer at the bad-frame threshold and the second plugin never notices.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugbox.bridge.runtime import MAX_BAD_FRAMES, WorkerRuntime
from plugbox.bridge.wire import Call, FrameReader, FrameTooLarge, FrameWriter, HostMsg, Reply, WorkerMsg
from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.lifecycle.entry import PluginEntry
from tests.fuzz._strategies import FUZZ, chunked, frame, nested, payloads, worker_msgs
from tests.integration.conftest import alive, enable, host_settings, wait_for

CAP = 1 << 14  # a small frame cap, so that oversized frames are easy to reach
PLUGIN = "fuzzed"
_enc = msgspec.msgpack.Encoder()


class FakeTransport:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.out = bytearray()
        self.closed = False
        self._rt = runtime

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self._rt.channel_lost()  # what the event loop does once the socket is closed


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
    """A WorkerRuntime wired to a fake channel, as if its worker had just connected."""
    rt = WorkerRuntime(entry, host.manager.deps, plugin_dir)
    transport = FakeTransport(rt)
    rt.transport = transport  # type: ignore[assignment]
    rt.writer = FrameWriter(transport, asyncio.get_running_loop())
    return rt, transport


chunk = st.one_of(
    worker_msgs.map(lambda m: bytes(frame(_enc.encode(m)))),
    payloads.map(frame),
    st.binary(min_size=1, max_size=12),  # raw bytes: may desynchronise the stream or declare an oversized frame
)


@FUZZ
@given(chunks=st.lists(chunk, max_size=40), cuts=st.lists(st.integers(0, 10**6), max_size=12),
       waiting=st.integers(0, 4))
def test_worker_runtime_survives_any_stream(
    bench: tuple[asyncio.Runner, Host, PluginEntry, Path], chunks: list[bytes], cuts: list[int], waiting: int
) -> None:
    runner, host, entry, plugin_dir = bench
    runner.run(_feed(host, entry, plugin_dir, b"".join(chunks), cuts, waiting))


async def _feed(host: Host, entry: PluginEntry, plugin_dir: Path, stream: bytes, cuts: list[int],
                waiting: int) -> None:
    rt, transport = _runtime(host, entry, plugin_dir)
    # Requests of the host's own, in flight while the garbage arrives (ids 1..waiting).
    mine = [rt.submit("hook", [0, "message:ack", None, None, None, "host", {}], 60.0, hook=True)
            for _ in range(waiting)]
    ids = {req_id for _fut, req_id in mine}
    model = FrameReader(WorkerMsg, CAP)  # what the host should have seen, frame by frame
    calls: list[int] = []
    oversized = False
    try:
        for piece in chunked(stream, cuts):
            if rt._death is not None:
                break
            rt.received(piece)  # must never raise
            assert len(rt.reader._buf) < CAP + 4
            if not oversized:
                try:
                    calls += [m.id for m in model.feed(piece) if type(m) is Call]
                except FrameTooLarge:
                    oversized = True
            assert set(rt.pending) <= ids and set(rt.deadlines) <= ids and rt.hook_requests <= ids
            assert not rt.pongs
            assert 0 <= rt.in_flight <= rt.max_calls
        for fut, req_id in mine:  # each of the host's requests is answered, still pending, or failed at death
            assert fut.done() or req_id in rt.pending
        if rt.calls:
            await asyncio.wait(list(rt.calls), timeout=10)
        assert not rt.calls
        if rt._death is not None:
            assert oversized or rt.reader.bad_frames > MAX_BAD_FRAMES, rt._death
            assert all(fut.done() for fut, _ in mine)  # death rejects every pending request at once
        else:
            assert not oversized
            assert rt.in_flight == 0  # (a dead runtime may keep a count for calls cancelled before they ran)
            rt.writer.flush()
            replies = FrameReader(HostMsg, 1 << 24).feed(bytes(transport.out))
            answered = sorted(m.id for m in replies if type(m) is Reply)
            assert answered == sorted(calls) or rt.refused_calls  # one reply per call (a refusal is a reply)
            assert len(answered) == len(calls)
    finally:
        await rt.stop()
        host.bus.unregister_plugin(entry.plugin_id)  # Register frames may have added hook proxies
        for fut, _ in mine:
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled():
                fut.exception()  # retrieved: WorkerGone at death is the expected answer
        if rt._hello.done():
            rt._hello.exception()  # no hello came: stop() failed it with WorkerGone, as at any death


# -- what the fuzzing above relies on, pinned down --------------------------------------------------

def _regression(bench: tuple[asyncio.Runner, Host, PluginEntry, Path], check: Any) -> None:
    runner, host, entry, plugin_dir = bench

    async def go() -> None:
        rt, _transport = _runtime(host, entry, plugin_dir)
        try:
            await check(rt)
        finally:
            await rt.stop()
            if rt._hello.done():
                rt._hello.exception()

    runner.run(go())


def test_a_frame_the_host_fails_to_handle_is_dropped_not_raised(
    bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong while handling one decoded frame (here: the log relay raising, as repr()
    of data nested near the recursion limit can) is a dropped, counted frame, not an exception
    out of the protocol's data_received; the frames after it are still handled."""
    def boom(*_args: Any) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    async def check(rt: WorkerRuntime) -> None:
        monkeypatch.setattr(rt.entry.logs, "emit", boom)
        fut, req_id = rt.submit("hook", [0, "message:ack", None, None, None, "host", {}], 60.0, hook=True)
        ok = {"continue": True, "data": None, "error": None}
        rt.received(frame(_enc.encode(["log", "info", "m", None])) + frame(_enc.encode(["res", req_id, True, ok])))
        assert rt.reader.bad_frames == 1 and rt._death is None
        assert fut.done() and fut.result().error is None

    _regression(bench, check)


def test_a_hook_answer_the_host_cannot_read_still_settles_the_hook(
    bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook's future has left `pending` by the time its answer is read: if reading it fails,
    the future must still settle, or the hook chain would wait forever (no deadline is left)."""
    def unreadable(_msg: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded while getting the str of an object")

    async def check(rt: WorkerRuntime) -> None:
        monkeypatch.setattr("plugbox.bridge.runtime._hook_result", unreadable)
        fut, req_id = rt.submit("hook", [0, "message:ack", None, None, None, "host", {}], 60.0, hook=True)
        rt.received(frame(_enc.encode(["res", req_id, True, {"continue": True, "error": ["x"]}])))
        assert fut.done() and "could not be read" in (fut.result().error or "")
        assert not rt.pending and not rt.deadlines

    _regression(bench, check)


@pytest.mark.parametrize("bad", [nested(5000), Path("/x"), object()], ids=["too-deep", "path", "object"])
def test_a_request_that_cannot_be_encoded_leaves_nothing_pending(bench: Any, bad: Any) -> None:
    """Regression: hook data that cannot be encoded (a built-in's handler may return a Path, say,
    and the bus hands it to the next handler, a worker) left half a frame in that worker's channel
    buffer, which desynchronised its stream for good, and the request stayed in `pending`."""
    async def check(rt: WorkerRuntime) -> None:
        with pytest.raises((RecursionError, TypeError)):
            rt.submit("hook", [0, "message:ack", bad, None, None, "host", {}], 60.0, hook=True)
        assert not rt.pending and not rt.deadlines and not rt.hook_requests
        rt.submit("hook", [0, "message:ack", "after", None, None, "host", {}], 60.0, hook=True)
        rt.writer.flush()  # type: ignore[union-attr]
        sent = FrameReader(HostMsg, 1 << 20).feed(bytes(_transport_of(rt).out))
        assert [m.args[2] for m in sent] == ["after"]

    _regression(bench, check)


def _transport_of(rt: WorkerRuntime) -> FakeTransport:
    assert isinstance(rt.transport, FakeTransport)
    return rt.transport


# -- end to end: a real worker writing garbage into its own channel ------------------------------

STEADY = """
from plugbox.sdk import HookResult, Plugin


class Steady(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("message:ack", self.answer)

    def answer(self, hook):
        return HookResult(data={"n": hook.data["n"] + 1})
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
        steady_dir = _write_plugin(tmp_path / "plugins", "steady", STEADY, [])
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
            outcome = await host.bus.execute("message:ack", {"n": answered}, "s1")
            assert not outcome.errors and not outcome.timed_out, outcome
            assert outcome.data == {"n": answered + 1}
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
