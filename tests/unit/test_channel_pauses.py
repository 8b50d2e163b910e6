"""When a worker's channel stops being read and when it is read again (SPEC §6: a worker that does
not read is paused; its CPU is charged to it), what the books say about it, and how values with no
schema are decoded at the edge of their caps. Complements test_channel_limits with the same fake
transport; no worker process, no real socket."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from plugbox.bridge.channel import Channel, ChannelLimits
from plugbox.bridge.values import hook_result, log_fields, result_value
from plugbox.errors import PluginError
from plugbox.protocol import Call, FrameReader, Health, Hook, HostMsg, Log, Reply, Result, encode_frame, encoded
from plugbox.sdk import HookResult
from tests.unit.test_channel_limits import LIMITS, FakeTransport, Peer, Ticks, calls, make_channel

EXT = msgspec.msgpack.Ext(7, b"x")  # a msgpack extension: never decoded on the host


def reply_size(req_id: int, reply_bytes: int = 60) -> int:
    return len(encode_frame(Reply(req_id, True, "x" * reply_bytes)))


class CountingTransport(FakeTransport):
    def __init__(self, protocol: Channel) -> None:
        super().__init__(protocol)
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        super().write(data)


def counted_channel(peer: Peer, limits: ChannelLimits) -> tuple[Channel, CountingTransport]:
    channel = Channel(peer, 1 << 20, "attacker", limits)
    peer.channel = channel
    transport = CountingTransport(channel)
    channel.connection_made(transport)  # type: ignore[arg-type]
    return channel, transport


# -- the marks and the books ---------------------------------------------------------------------


async def test_the_transport_resumes_writing_once_the_queue_is_half_drained() -> None:
    _channel, transport = make_channel(Peer())
    assert (transport.high, transport.low) == (LIMITS.high_water, LIMITS.high_water // 2)


async def test_bytes_queued_count_the_transports_buffer_and_answers_not_yet_handed_over() -> None:
    seen: list[int] = []

    class Watching(Peer):
        def on_call(self, msg: Call) -> None:
            assert self.channel is not None
            if msg.id == 3:
                seen.append(self.channel.stats().queued_bytes)  # reply 2 is still in the corked writer
            super().on_call(msg)

    unconnected = Channel(Watching(), 1 << 20, "attacker", LIMITS)
    assert unconnected.stats().queued_bytes == 0
    peer = Watching()
    channel, transport = make_channel(peer, ChannelLimits(1000, 60.0, 1.0, 60.0, 64))
    channel.data_received(calls(1))
    assert channel.stats().queued_bytes == len(transport.queued) == reply_size(1)
    channel.data_received(calls(2, 3))
    assert seen == [reply_size(1) + reply_size(2)]
    assert channel.stats().queued_bytes == reply_size(1) + reply_size(2) + reply_size(3)


async def test_answers_given_in_one_batch_leave_in_one_write() -> None:
    channel, transport = counted_channel(Peer(), ChannelLimits(1000, 60.0, 1.0, 60.0, 64))
    channel.data_received(calls(1, 2, 3))
    assert transport.writes == 1 and len(transport.queued) == sum(reply_size(i) for i in (1, 2, 3))


async def test_answers_reaching_the_high_water_mark_are_handed_over_before_the_batch_ends() -> None:
    queued_before: list[int] = []

    class Watching(Peer):
        def on_call(self, msg: Call) -> None:
            queued_before.append(len(transport.queued))
            super().on_call(msg)

    channel, transport = make_channel(Watching(), ChannelLimits(reply_size(1), 60.0, 1.0, 60.0, 64))
    channel.data_received(calls(1, 2))
    assert queued_before == [0, reply_size(1)]  # the first answer alone reached the mark: pushed


async def test_every_backpressure_pause_is_counted() -> None:
    channel, transport = make_channel(Peer(reply_bytes=60))
    for round_ in range(2):
        channel.data_received(calls(2 * round_ + 1, 2 * round_ + 2))
        assert not transport.reading
        transport.drain()
    assert channel.stats().backpressure_pauses == 2 and transport.reading


# -- reading again --------------------------------------------------------------------------------


async def test_answering_the_backlog_can_fill_the_queue_again_and_reading_stays_stopped() -> None:
    peer = Peer(reply_bytes=60)
    channel, transport = make_channel(peer)
    channel.data_received(calls(1, 2, 3, 4, 5, 6))
    assert peer.calls == [1, 2]
    transport.drain()  # resumes writing: the backlog's answers pass the mark again
    assert peer.calls == [1, 2, 3, 4]
    assert not transport.reading and channel.stats().paused == ("backpressure",)
    assert channel.stats().backlog == 2


async def test_a_channel_paused_for_two_reasons_is_read_again_only_once_both_are_lifted() -> None:
    limits = ChannelLimits(1 << 20, 60.0, cpu_share=1.0, cpu_burst=0.01, value_max_bytes=64)
    ticks = Ticks(0.02)
    channel, transport = make_channel(Peer(), limits, cpu_clock=ticks, clock=asyncio.get_running_loop().time)
    channel.data_received(calls(1))  # 0.02 s of a 0.01 s burst: throttled
    ticks.step = 0.0
    channel.pause_writing()  # and the queue to it went above the mark
    channel.data_received(calls(2))  # already in the socket
    assert channel.stats().paused == ("backpressure", "throttled")
    channel.resume_writing()
    assert not transport.reading and channel.stats().backlog == 1  # still throttled
    await asyncio.sleep(0.05)
    assert transport.reading and channel.stats().backlog == 0


async def test_a_channel_throttled_once_is_throttled_again_when_it_runs_into_debt_again() -> None:
    limits = ChannelLimits(1 << 20, 60.0, cpu_share=1.0, cpu_burst=0.01, value_max_bytes=64)
    ticks = Ticks(0.0)
    channel, transport = make_channel(Peer(), limits, cpu_clock=ticks, clock=asyncio.get_running_loop().time)
    for req_id in (1, 2):
        ticks.step = 0.02
        channel.data_received(calls(req_id))
        ticks.step = 0.0
        assert not transport.reading
        await asyncio.sleep(0.05)
        assert transport.reading
    assert channel.stats().throttled == 2


async def test_an_answer_held_by_backpressure_reaches_the_worker_intact() -> None:
    peer = Peer(reply_bytes=60)
    channel, transport = make_channel(peer)
    channel.data_received(calls(1, 2))
    assert not transport.reading
    channel.answer(Reply(99, True, "late but whole"))
    assert channel.stats().held_answers == 1
    sent = transport.drain() + transport.drain()
    replies = [m for m in FrameReader(HostMsg, 1 << 20).feed(sent) if type(m) is Reply]
    assert Reply(99, True, "late but whole") in replies


# -- decoding at the edge of the caps -------------------------------------------------------------


async def test_a_result_past_the_cap_fails_its_request_with_the_caps_own_words() -> None:
    channel, _transport = make_channel(Peer())  # value_max_bytes=64
    fut = channel.request(Health(channel.new_id()))
    channel.data_received(bytes(encode_frame(Result(1, True, encoded("v" * 100)))))
    with pytest.raises(PluginError, match=r"^result of 102 bytes is larger than the host decodes without a schema"):
        await fut


def test_a_result_exactly_at_the_cap_is_decoded() -> None:
    value = encoded("v" * 60)
    assert result_value(Result(1, True, value), len(value)) == "v" * 60
    with pytest.raises(PluginError, match=f"result of {len(value)} bytes is larger"):
        result_value(Result(1, True, value), len(value) - 1)


def test_hook_data_exactly_at_the_cap_is_decoded() -> None:
    data = {"body": "b" * 40}
    answer = Result(1, True, encoded({"continue": True, "data": data}))
    assert hook_result(answer, len(encoded(data))) == HookResult(data=data)


def test_log_fields_exactly_at_the_cap_are_shown() -> None:
    fields = {"a": "b" * 30}
    assert log_fields(Log("info", "m", encoded(fields)), len(encoded(fields))) == fields


def test_hook_data_that_cannot_be_decoded_is_the_handlers_error_saying_why() -> None:
    answer = Result(1, True, msgspec.Raw(msgspec.msgpack.encode({"continue": True, "data": {"f": EXT}})))
    assert hook_result(answer, 1000) == HookResult(
        error="hook result could not be decoded: msgpack extension type 7 is not allowed")


async def test_a_result_that_cannot_be_decoded_fails_its_request_as_a_plugin_error() -> None:
    channel, _transport = make_channel(Peer())
    fut = channel.request(Health(channel.new_id()))
    channel.data_received(bytes(encode_frame(Result(1, True, msgspec.Raw(msgspec.msgpack.encode(EXT))))))
    with pytest.raises(PluginError, match=r"^result could not be decoded: msgpack extension type 7 is not allowed$"):
        await fut


async def test_a_hook_answer_is_decoded_up_to_its_events_payload_cap_not_the_plain_value_cap() -> None:
    channel, _transport = make_channel(Peer())  # value_max_bytes=64
    hook = Hook(channel.new_id(), 1, "message:received", {}, "s1", datetime.now(UTC), "host", {})
    fut = channel.hook(hook)
    data: Any = {"body": "b" * 200}
    channel.data_received(bytes(encode_frame(Result(hook.id, True, encoded({"continue": True, "data": data})))))
    assert await fut == HookResult(data=data)
