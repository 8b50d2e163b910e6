"""The host end of a worker's channel (SPEC §6), driven directly over a fake transport: answers reach
the request that asked, hook answers become HookResults, whatever the worker asks for goes to the
peer, and a channel that ends fails every waiter at once with the reason, telling the peer once."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from plugbox.bridge.channel import MAX_BAD_FRAMES, Channel, ChannelLimits
from plugbox.errors import PluginError, WorkerGone
from plugbox.protocol import (
    NIL,
    Call,
    FrameReader,
    Health,
    Hello,
    Hook,
    HostMsg,
    LayerResult,
    Log,
    Ping,
    Pong,
    Register,
    Result,
    encode_frame,
    encoded,
)
from plugbox.sdk import HookResult

CAP = 1 << 12
# roomy limits: backpressure and CPU charging have their own tests (test_channel_limits)
LIMITS = ChannelLimits(high_water=1 << 20, drain_timeout=5.0, cpu_share=1.0, cpu_burst=60.0,
                       value_max_bytes=1 << 20)


class Peer:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.registers: list[Register] = []
        self.logs: list[Log] = []
        self.lost: list[str] = []

    def on_call(self, msg: Call) -> None:
        self.calls.append(msg)

    def on_register(self, msg: Register) -> None:
        self.registers.append(msg)

    def on_log(self, msg: Log) -> None:
        self.logs.append(msg)

    def on_lost(self, reason: str) -> None:
        self.lost.append(reason)


class Transport:
    def __init__(self, channel: Channel) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True
        self._channel = channel

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    # the queue to the worker never fills here (roomy LIMITS): test_channel_limits drives it
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self._channel.connection_lost(None)  # what the event loop does once the socket is closed

    def close(self) -> None:
        self.abort()

    def sent(self) -> list[Any]:
        return FrameReader(HostMsg, 1 << 20).feed(b"".join(self.writes))


def connected() -> tuple[Channel, Peer, Transport]:
    peer = Peer()
    channel = Channel(peer, CAP, "echo", LIMITS)
    transport = Transport(channel)
    channel.connection_made(transport)  # type: ignore[arg-type]
    return channel, peer, transport


def feed(channel: Channel, *msgs: msgspec.Struct) -> None:
    channel.data_received(b"".join(bytes(encode_frame(m)) for m in msgs))


def hook(channel: Channel, event: str = "message:received") -> tuple[asyncio.Future[Any], int]:
    msg = Hook(channel.new_id(), 1, event, {"n": 1}, "s1", datetime.now(UTC), "engine", {})
    return channel.hook(msg), msg.id


def health(channel: Channel) -> tuple[asyncio.Future[Any], int]:
    req_id = channel.new_id()
    return channel.request(Health(req_id)), req_id


# -- requests and their answers ---------------------------------------------------------------


async def test_a_request_is_sent_to_the_worker_and_its_answer_resolves_it() -> None:
    channel, _, transport = connected()
    fut, req_id = health(channel)
    channel.flush()
    assert transport.sent() == [Health(req_id)]
    feed(channel, Result(req_id, True, encoded({"ok": 1})))
    assert fut.result() == {"ok": 1}
    assert channel.stats().requests_in_flight == 0


async def test_answers_reach_the_request_with_their_id_whatever_the_order() -> None:
    channel, _, _ = connected()
    first, first_id = health(channel)
    second, second_id = health(channel)
    assert first_id != second_id
    feed(channel, Result(second_id, True, encoded("two")), Result(first_id, True, encoded("one")))
    assert (first.result(), second.result()) == ("one", "two")


async def test_a_failed_request_raises_the_workers_error() -> None:
    channel, _, _ = connected()
    fut, req_id = health(channel)
    feed(channel, Result(req_id, False, NIL, "boom"))
    with pytest.raises(PluginError, match=r"^boom$"):
        fut.result()


async def test_a_failure_without_a_message_still_says_the_plugin_failed() -> None:
    channel, _, _ = connected()
    fut, req_id = health(channel)
    feed(channel, Result(req_id, False))
    with pytest.raises(PluginError, match=r"^plugin failed without a message$"):
        fut.result()


async def test_an_answer_nobody_waits_for_is_counted_late_and_changes_nothing() -> None:
    channel, _, _ = connected()
    fut, req_id = health(channel)
    feed(channel, Result(req_id + 100, True, encoded("stray")))
    assert not fut.done()
    assert channel.stats().late_replies == 1 and channel.stats().requests_in_flight == 1
    feed(channel, Result(req_id, True, encoded("mine")), Result(req_id, True, encoded("again")))
    assert fut.result() == "mine"
    assert channel.stats().late_replies == 2


# -- hooks --------------------------------------------------------------------------------------


async def test_a_plain_continue_answer_leaves_the_hook_data_unchanged() -> None:
    channel, _, _ = connected()
    fut, req_id = hook(channel)
    feed(channel, Result(req_id, True))
    assert fut.result() is None


async def test_a_hook_answer_that_stops_the_chain_carries_its_data() -> None:
    channel, _, _ = connected()
    fut, req_id = hook(channel)
    feed(channel, Result(req_id, True, encoded({"continue": False, "data": {"n": 2}, "error": None})))
    assert fut.result() == HookResult(data={"n": 2}, stop=True, error=None)


async def test_a_hook_answer_that_continues_with_new_data_does_not_stop() -> None:
    channel, _, _ = connected()
    fut, req_id = hook(channel)
    feed(channel, Result(req_id, True, encoded({"continue": True, "data": "changed"})))
    assert fut.result() == HookResult(data="changed", stop=False, error=None)


async def test_a_hook_error_in_text_is_passed_on_as_given() -> None:
    channel, _, _ = connected()
    fut, req_id = hook(channel)
    feed(channel, Result(req_id, True, encoded({"continue": True, "error": "handler said no"})))
    assert fut.result().error == "handler said no"


@pytest.mark.parametrize("value", [{"data": 1}, {"continue": "yes"}, ["continue"], 7,
                                   {"continue": True, "error": ["bad", 1]}, {"continue": True, "extra": 1}],
                         ids=["no-continue", "continue-not-bool", "list", "int", "error-not-text", "unknown-key"])
async def test_a_hook_answer_of_the_wrong_shape_is_a_hook_error(value: Any) -> None:
    channel, _, _ = connected()
    fut, req_id = hook(channel)
    feed(channel, Result(req_id, True, encoded(value)))
    assert fut.result() == HookResult(error="hook result is not {continue, data, error}")


async def test_a_failed_hook_resolves_to_its_error_rather_than_raising() -> None:
    channel, _, _ = connected()
    fut, req_id = hook(channel)
    other, other_id = hook(channel)
    feed(channel, Result(req_id, False, NIL, "handler raised"), Result(other_id, False))
    assert fut.result() == HookResult(error="handler raised")
    assert other.result() == HookResult(error="hook handler failed without a message")


async def test_the_events_of_hooks_in_flight_are_known_until_answered() -> None:
    channel, _, _ = connected()
    assert channel.hook_events() == frozenset()
    _, received = hook(channel, "message:received")
    hook(channel, "message:sending")
    health(channel)  # not a hook: no event
    assert channel.hook_events() == {"message:received", "message:sending"}
    assert channel.stats().hooks_in_flight == 2
    feed(channel, Result(received, True))
    assert channel.hook_events() == {"message:sending"}


async def test_an_abandoned_hook_is_forgotten_and_its_late_answer_counted() -> None:
    channel, _, _ = connected()
    abandoned, abandoned_id = hook(channel, "message:received")
    waiting, _ = hook(channel, "message:sending")
    abandoned.cancel()  # the bus gave up on it: past its budget
    channel.forget_abandoned()
    assert channel.hook_events() == {"message:sending"}
    assert channel.stats().requests_in_flight == 1 and not waiting.done()
    feed(channel, Result(abandoned_id, True))
    assert channel.stats().late_replies == 1


async def test_a_late_answer_to_a_hook_still_on_the_books_clears_its_event() -> None:
    channel, _, _ = connected()
    fut, req_id = hook(channel, "message:received")
    fut.cancel()  # abandoned, not yet forgotten
    feed(channel, Result(req_id, True))
    assert channel.hook_events() == frozenset()
    assert channel.stats().late_replies == 1


# -- what the worker asks for goes to the peer ---------------------------------------------------


async def test_calls_registrations_and_logs_go_to_the_peer_in_order() -> None:
    channel, peer, _ = connected()
    call, line = Call(7, "storage.get", encoded({"key": "k"})), Log("info", "hi")
    reg = Register("hook", "message:received", 3)
    feed(channel, call, line, reg, Call(8, "storage.keys"))
    assert peer.calls == [call, Call(8, "storage.keys")]
    assert peer.registers == [reg] and peer.logs == [line]
    assert channel.stats().bad_frames == 0


async def test_the_workers_hello_is_awaited_once() -> None:
    channel, _, _ = connected()
    hello = Hello(2, 1234, [LayerResult("rlimits", True)])
    feed(channel, hello)
    assert await channel.hello == hello
    feed(channel, Hello(2, 999, []))  # a second hello is not the worker's to send
    assert channel.hello.result() == hello
    assert channel.stats().bad_frames == 1


async def test_a_pong_answers_its_ping_and_a_stray_pong_is_ignored() -> None:
    channel, _, transport = connected()
    pong = channel.ping()
    channel.flush()
    [ping] = transport.sent()
    assert type(ping) is Ping and channel.stats().pings_in_flight == 1
    feed(channel, Pong(ping.id + 50))
    assert not pong.done()
    feed(channel, Pong(ping.id))
    assert pong.done() and pong.result() is None
    assert channel.stats().pings_in_flight == 0 and channel.stats().bad_frames == 0


async def test_answers_given_while_handling_a_batch_leave_in_one_write() -> None:
    channel, peer, transport = connected()
    feed(channel, Pong(1))  # nothing written for it
    before = len(transport.writes)

    def answer(msg: Call) -> None:
        channel.send(Ping(msg.id))

    peer.on_call = answer  # type: ignore[method-assign]
    feed(channel, Call(1, "a"), Call(2, "b"), Call(3, "c"))
    assert len(transport.writes) - before == 1
    assert [m.id for m in transport.sent()] == [1, 2, 3]


# -- the end of the channel ----------------------------------------------------------------------


async def test_when_the_worker_goes_every_waiter_fails_at_once_and_the_peer_is_told() -> None:
    channel, peer, _ = connected()
    request, _ = health(channel)
    hooked, _ = hook(channel)
    pong = channel.ping()
    channel.connection_lost(None)
    for fut in (request, hooked, pong, channel.hello):
        with pytest.raises(WorkerGone, match="plugin 'echo' worker is gone: worker closed its channel"):
            fut.result()
    assert peer.lost == ["worker closed its channel"]
    stats = channel.stats()
    assert (stats.requests_in_flight, stats.hooks_in_flight, stats.pings_in_flight) == (0, 0, 0)
    assert stats.gone == "worker closed its channel"
    assert channel.hook_events() == frozenset()


async def test_an_aborted_channel_tells_everyone_the_reason_it_was_given() -> None:
    channel, peer, transport = connected()
    fut, _ = health(channel)
    channel.abort("cpu runaway")
    channel.abort("a second reason")  # the first reason stands
    assert transport.closed
    with pytest.raises(WorkerGone, match="cpu runaway"):
        fut.result()
    assert peer.lost == ["cpu runaway"]
    with pytest.raises(WorkerGone, match=r"^cpu runaway$"):
        health(channel)
    with pytest.raises(WorkerGone):
        channel.ping()


async def test_close_closes_the_transport() -> None:
    channel, peer, transport = connected()
    channel.close()
    assert transport.closed and peer.lost == ["worker closed its channel"]


async def test_nothing_can_be_asked_before_the_worker_connects() -> None:
    channel = Channel(Peer(), CAP, "echo", LIMITS)
    channel.send(Ping(1))  # dropped, not raised
    channel.flush()
    channel.close()
    with pytest.raises(WorkerGone, match="plugin 'echo': no channel to its worker yet"):
        health(channel)
    with pytest.raises(WorkerGone, match="no channel to its worker yet"):
        channel.ping()
    channel.data_received(bytes(encode_frame(Log("info", "early"))))  # ignored
    assert channel.stats().bad_frames == 0
    channel.abort("never connected")  # nothing to abort; the reason is kept for whoever asks next
    with pytest.raises(WorkerGone, match=r"^never connected$"):
        health(channel)


async def test_a_frame_over_the_cap_ends_the_channel_as_a_protocol_violation() -> None:
    channel, peer, transport = connected()
    fut, _ = health(channel)
    channel.data_received((CAP + 1).to_bytes(4, "big"))
    assert transport.closed
    assert peer.lost and peer.lost[0].startswith("protocol violation: ")
    with pytest.raises(WorkerGone, match="protocol violation"):
        fut.result()


async def test_garbage_frames_are_dropped_until_past_the_limit_then_the_channel_ends() -> None:
    channel, peer, transport = connected()
    garbage = b"\x00\x00\x00\x01\xc1"
    channel.data_received(garbage * MAX_BAD_FRAMES)
    assert channel.stats().bad_frames == MAX_BAD_FRAMES and not transport.closed
    feed(channel, Log("info", "still heard"))
    assert [line.message for line in peer.logs] == ["still heard"]
    channel.data_received(garbage)
    assert transport.closed
    assert peer.lost == [f"worker sent more than {MAX_BAD_FRAMES} undecodable frames"]


async def test_frames_after_the_channel_ended_in_the_same_batch_are_not_acted_on() -> None:
    channel, peer, _ = connected()
    channel.data_received(b"\x00\x00\x00\x01\xc1" * (MAX_BAD_FRAMES + 1) + bytes(encode_frame(Call(1, "x"))))
    assert channel.stats().gone is not None
    assert peer.calls == []


async def test_a_frame_the_peer_fails_on_is_counted_and_the_next_still_handled() -> None:
    channel, peer, _ = connected()

    def fail(_msg: Log) -> None:
        raise RecursionError("too deep")

    peer.on_log = fail  # type: ignore[method-assign]
    feed(channel, Log("info", "x"), Call(1, "after"))
    assert channel.stats().bad_frames == 1
    assert peer.calls == [Call(1, "after")]


async def test_request_and_ping_ids_are_never_reused() -> None:
    channel, _, transport = connected()
    ids = [channel.new_id() for _ in range(3)]
    channel.ping()
    channel.flush()
    [ping] = transport.sent()
    assert len({*ids, ping.id}) == 4


# -- what the operator's log is told (and not flooded with) ---------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "plugbox.bridge" and r.levelno == logging.WARNING]


async def test_dropped_frames_are_logged_on_the_first_and_every_fiftieth_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel, _, _ = connected()
    with caplog.at_level(logging.WARNING, logger="plugbox.bridge"):
        channel.data_received(b"\x00\x00\x00\x01\xc1" * 100)
    logged = warnings_of(caplog)
    assert len(logged) == 3
    assert [line.split(" so far")[0] for line in logged] == [
        "plugin echo: dropped a frame (1", "plugin echo: dropped a frame (50", "plugin echo: dropped a frame (100"]
    assert all(line.split("so far): ")[1] for line in logged)  # and why


async def test_a_frame_of_a_kind_the_host_never_expects_is_logged_by_kind(caplog: pytest.LogCaptureFixture) -> None:
    channel, _, _ = connected()
    feed(channel, Hello(2, 1, []))
    with caplog.at_level(logging.WARNING, logger="plugbox.bridge"):
        feed(channel, Hello(2, 1, []))
    assert warnings_of(caplog) == ["plugin echo: dropped a frame (1 so far): unexpected Hello frame"]


async def test_a_long_reason_for_a_dropped_frame_is_cut_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    channel, peer, _ = connected()

    def fail(_msg: Log) -> None:
        raise ValueError("x" * 1000)

    peer.on_log = fail  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="plugbox.bridge"):
        feed(channel, Log("info", "x"))
    [line] = warnings_of(caplog)
    assert line == "plugin echo: dropped a frame (1 so far): " + "x" * 200


async def test_late_replies_are_logged_once_naming_plugin_and_request(caplog: pytest.LogCaptureFixture) -> None:
    channel, _, _ = connected()
    with caplog.at_level(logging.WARNING, logger="plugbox.bridge"):
        feed(channel, Result(41, True), Result(42, True), Result(43, True))
    assert warnings_of(caplog) == ["plugin echo: late reply to request 41 dropped"]
    assert channel.stats().late_replies == 3


async def test_frames_the_host_cannot_use_count_towards_the_limit_with_garbage() -> None:
    channel, _, transport = connected()
    feed(channel, Hello(2, 1, []))
    channel.data_received(b"\x00\x00\x00\x01\xc1" * (MAX_BAD_FRAMES - 1))
    feed(channel, Hello(2, 1, []))  # the hundredth unusable frame
    assert channel.stats().bad_frames == MAX_BAD_FRAMES and not transport.closed
    feed(channel, Hello(2, 1, []))
    assert transport.closed


async def test_a_hook_answer_that_cannot_be_read_still_settles_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(_msg: Result, _data_cap: int) -> HookResult:
        raise RecursionError("too deep to read")

    monkeypatch.setattr("plugbox.bridge.channel.hook_result", unreadable)
    channel, _, _ = connected()
    fut, req_id = hook(channel)
    feed(channel, Result(req_id, True, encoded({"continue": True})))
    assert fut.result() == HookResult(error="hook result could not be read (RecursionError)")
    assert channel.stats().hooks_in_flight == 0


async def test_an_abandoned_request_that_is_not_a_hook_is_forgotten_too() -> None:
    channel, _, _ = connected()
    fut, req_id = health(channel)
    fut.cancel()
    channel.forget_abandoned()
    assert channel.stats().requests_in_flight == 0
    feed(channel, Result(req_id, True))
    assert channel.stats().late_replies == 1
