"""What a worker's channel lets it make the host spend: bytes queued to it (backpressure, then a
kill), calls in flight (all verbs, a slot held until the answer is handed over), host CPU (a
token bucket that pauses that channel alone) and decode memory (values with no schema decoded
only under a cap). Fake transports and clocks; no worker process."""

from __future__ import annotations

import asyncio
import contextvars
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from plugbox.bridge.channel import Channel, ChannelLimits
from plugbox.bridge.serving import CapabilityServer
from plugbox.bridge.values import log_fields
from plugbox.errors import PluginError, StorageError
from plugbox.payloads import PAYLOADS, Undecoded, problem
from plugbox.protocol import Call, Health, Hook, Log, Register, Reply, Result, encode_frame, encoded
from plugbox.storage.kv import PluginStorage
from plugbox.storage.sqlite import SqliteDatabase
from plugbox.totals.rate import RateTotal

LIMITS = ChannelLimits(high_water=100, drain_timeout=60.0, cpu_share=1.0, cpu_burst=60.0, value_max_bytes=64)


class FakeTransport:
    """Holds everything written (the worker reads nothing until `drain`), and calls the protocol's
    pause_writing / resume_writing at the marks, as asyncio's transports do."""

    def __init__(self, protocol: Channel) -> None:
        self.protocol = protocol
        self.queued = bytearray()
        self.high = self.low = 0
        self.reading = True
        self.aborted = False
        self._writing_paused = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high, self.low = high or 0, low or 0

    def get_write_buffer_size(self) -> int:
        return len(self.queued)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.queued += data
        if len(self.queued) > self.high and not self._writing_paused:
            self._writing_paused = True
            self.protocol.pause_writing()

    def drain(self) -> bytes:
        out, self.queued = bytes(self.queued), bytearray()
        if self._writing_paused:
            self._writing_paused = False
            self.protocol.resume_writing()
        return out

    def is_closing(self) -> bool:
        return self.aborted

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def abort(self) -> None:
        if not self.aborted:
            self.aborted = True
            self.protocol.connection_lost(None)

    close = abort


class Peer:
    """Answers every call at once with a reply of `reply_bytes`, as an inline verb would."""

    def __init__(self, reply_bytes: int = 60) -> None:
        self.channel: Channel | None = None
        self.calls: list[int] = []
        self.logs: list[Log] = []
        self.lost: list[str] = []
        self.reply_bytes = reply_bytes

    def on_call(self, msg: Call) -> None:
        self.calls.append(msg.id)
        assert self.channel is not None
        self.channel.answer(Reply(msg.id, True, "x" * self.reply_bytes))

    def on_register(self, msg: Register) -> None:
        pass

    def on_log(self, msg: Log) -> None:
        self.logs.append(msg)

    def on_lost(self, reason: str) -> None:
        self.lost.append(reason)


def make_channel(peer: Any, limits: ChannelLimits = LIMITS, label: str = "attacker",
                 **kw: Any) -> tuple[Channel, FakeTransport]:
    channel = Channel(peer, 1 << 20, label, limits, **kw)
    if isinstance(peer, Peer):
        peer.channel = channel
    transport = FakeTransport(channel)
    channel.connection_made(transport)  # type: ignore[arg-type]
    return channel, transport


def calls(*ids: int) -> bytes:
    return b"".join(bytes(encode_frame(Call(i, "storage.get", encoded({"key": "k"})))) for i in ids)


# -- bytes queued to the worker -----------------------------------------------------------------


async def test_reading_stops_above_the_high_water_mark_and_the_rest_of_the_batch_waits() -> None:
    peer = Peer(reply_bytes=60)
    channel, transport = make_channel(peer)
    channel.data_received(calls(1, 2, 3, 4, 5))
    assert not transport.reading
    assert peer.calls == [1, 2]  # two ~70-byte answers pass the 100-byte mark
    stats = channel.stats()
    assert stats.backlog == 3 and stats.paused == ("backpressure",) and stats.backpressure_pauses == 1
    transport.drain()  # the worker reads: the backlog is handled, then the channel is read again
    assert peer.calls == [1, 2, 3, 4]
    transport.drain()
    assert peer.calls == [1, 2, 3, 4, 5]
    assert transport.reading and channel.stats().backlog == 0


async def test_frames_read_while_paused_wait_behind_the_backlog() -> None:
    peer = Peer(reply_bytes=60)
    channel, transport = make_channel(peer)
    channel.data_received(calls(1, 2, 3))
    channel.data_received(calls(4))  # already in the socket when reading stopped
    assert peer.calls == [1, 2]
    while not transport.reading or channel.stats().backlog:
        transport.drain()
    assert peer.calls == [1, 2, 3, 4]


async def test_requests_to_a_worker_that_is_not_reading_are_refused_not_queued() -> None:
    peer = Peer(reply_bytes=200)
    channel, transport = make_channel(peer)
    channel.data_received(calls(1))
    queued = len(transport.queued)
    with pytest.raises(PluginError, match=r"plugin 'attacker' is not reading its channel: \d+ bytes queued"):
        channel.request(Health(channel.new_id()))
    assert len(transport.queued) == queued and channel.stats().requests_in_flight == 0
    transport.drain()
    assert not channel.request(Health(channel.new_id())).done()


async def test_a_worker_that_does_not_drain_is_ended_with_the_bytes_queued() -> None:
    peer = Peer(reply_bytes=200)
    channel, transport = make_channel(peer, ChannelLimits(100, 0.01, 1.0, 60.0, 64))
    channel.data_received(calls(1))
    assert not transport.reading
    await asyncio.sleep(0.05)
    assert transport.aborted
    assert len(peer.lost) == 1
    assert peer.lost[0].startswith("not reading its channel: ")
    assert "bytes queued to it for 0.01 s" in peer.lost[0]


async def test_a_worker_that_drains_in_time_is_not_ended() -> None:
    peer = Peer(reply_bytes=200)
    channel, transport = make_channel(peer, ChannelLimits(100, 0.05, 1.0, 60.0, 64))
    channel.data_received(calls(1))
    transport.drain()
    await asyncio.sleep(0.1)
    assert not transport.aborted and peer.lost == []


async def test_a_worker_that_drains_does_not_carry_the_old_deadline_into_its_next_pause() -> None:
    """Each pause gets the whole drain timeout: the timer of one that ended is cancelled, or it
    would end a worker paused again shortly after, long before its new pause timed out."""
    peer = Peer(reply_bytes=200)
    channel, transport = make_channel(peer, ChannelLimits(100, 60.0, 1.0, 60.0, 64))
    channel.data_received(calls(1))
    first = channel._drain_timer  # (the loop's handle: the only way to see it without waiting 60 s)
    assert first is not None and not first.cancelled()
    transport.drain()
    assert first.cancelled() and channel._drain_timer is None
    channel.data_received(calls(2))
    second = channel._drain_timer
    assert second is not None and second is not first and not second.cancelled()


# -- calls in flight ----------------------------------------------------------------------------


class FakeRouter:
    """`storage.get` answers inline; anything else waits on a future the test settles."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[Any]] = []
        self.charges: list[Any] = []  # what each waiting call is told to charge its loop time to

    def is_sync(self, verb: str) -> bool:
        return verb == "storage.get"

    def invoke(self, caller: Any, verb: str, args: Any, *, charge: Any = None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.is_sync(verb):
            fut.set_result("y" * 200)
        else:
            self.waiting.append(fut)
            self.charges.append(charge)
        return fut


class FakeBus:
    def context_for(self, plugin_id: str, events: Any) -> contextvars.Context:
        return contextvars.copy_context()


class Entry:
    plugin_id = "attacker"


class ServingPeer(Peer):
    def __init__(self) -> None:
        super().__init__()
        self.server: CapabilityServer | None = None

    def on_call(self, msg: Call) -> None:
        assert self.server is not None
        self.server.serve(msg)


SERVING_LIMITS = ChannelLimits(1000, 60.0, 1.0, 60.0, 64)


def serving(max_calls: int, limits: ChannelLimits = SERVING_LIMITS,
            **kw: Any) -> tuple[CapabilityServer, FakeRouter, Channel, FakeTransport]:
    peer = ServingPeer()
    channel, transport = make_channel(peer, limits, **kw)
    router = FakeRouter()
    peer.server = CapabilityServer(Entry(), router, FakeBus(), channel, max_calls)  # type: ignore[arg-type]
    return peer.server, router, channel, transport


def frames(*msgs: Any) -> bytes:
    return b"".join(bytes(encode_frame(m)) for m in msgs)


def replies(data: bytes) -> list[Reply]:
    from plugbox.protocol import FrameReader, HostMsg

    return [m for m in FrameReader(HostMsg, 1 << 20).feed(data) if type(m) is Reply]


async def test_an_inline_call_counts_against_max_calls_in_flight() -> None:
    server, _router, channel, transport = serving(max_calls=1)
    channel.data_received(frames(Call(1, "storage.set", encoded({})), Call(2, "storage.get", encoded({}))))
    answered = replies(transport.drain())
    assert [(r.id, r.ok) for r in answered] == [(2, False)]
    assert "too many capability calls in flight (max 1)" in (answered[0].error or "")
    assert server.refused == 1


async def test_an_answer_held_by_backpressure_keeps_its_slot_until_handed_to_the_transport() -> None:
    server, router, channel, transport = serving(max_calls=4)
    channel.data_received(frames(Call(1, "storage.set", encoded({})), *[Call(i, "storage.get", encoded({}))
                                                                        for i in range(2, 8)]))
    assert not transport.reading and server.in_flight == 1  # the async call; inline answers went out
    router.waiting[0].set_result("done")
    await asyncio.sleep(0)
    assert channel.stats().held_answers == 1
    assert server.in_flight == 1  # completed, but its answer is not on the transport yet
    while not transport.reading or channel.stats().backlog:
        transport.drain()
    assert server.in_flight == 0 and channel.stats().held_answers == 0


async def test_a_request_whose_waiter_gives_up_no_longer_counts_and_its_late_answer_is_dropped() -> None:
    """A hook cut by its budget or the chain's (the bus cancels its future), a search or health
    check past its timeout: the request is off the channel's books before any answer comes (not in
    flight, not a hook event the re-entry guard sees); a late answer is counted and dropped."""
    channel, _transport = make_channel(Peer())
    hook = channel.hook(Hook(channel.new_id(), 1, "message:received", {"id": "m"}, "s",
                             datetime.now(UTC), "engine", {}))
    health = channel.request(Health(channel.new_id()))
    kept = channel.request(Health(channel.new_id()))
    assert channel.stats().requests_in_flight == 3 and channel.stats().hooks_in_flight == 1
    hook.cancel()
    health.cancel()
    await asyncio.sleep(0)  # (done callbacks run on the next turn of the loop)
    stats = channel.stats()
    assert stats.requests_in_flight == 1 and stats.hooks_in_flight == 0 and channel.hook_events() == frozenset()
    for req_id in (1, 2, 3):  # the late answers, and the one still awaited
        channel.data_received(bytes(encode_frame(Result(req_id, True, encoded(None)))))
    assert channel.stats().late_replies == 2 and kept.done() and channel.stats().requests_in_flight == 0


async def test_requests_a_silent_worker_never_answers_do_not_pile_up_on_the_books() -> None:
    """Thousands of requests given up on (a search provider that never answers, queried again and
    again): the books are swept as they grow, and hold about twice the live requests at most."""
    channel, _transport = make_channel(Peer(), ChannelLimits(1 << 30, 60.0, 1.0, 60.0, 64))
    live = [channel.request(Health(channel.new_id())) for _ in range(10)]
    for _ in range(5000):
        channel.request(Health(channel.new_id())).cancel()
    assert len(channel._pending) <= 2 * (len(live) + 64)  # (the books themselves: stats() would sweep)
    assert channel.stats().requests_in_flight == len(live)


# -- host CPU -----------------------------------------------------------------------------------


class Ticks:
    """A clock that moves `step` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def test_host_cpu_past_the_bucket_pauses_that_channel_alone_for_the_debt() -> None:
    clock = asyncio.get_running_loop().time  # the bucket refills in (loop) time; CPU is what the ticks say
    limits = ChannelLimits(1 << 20, 60.0, cpu_share=1.0, cpu_burst=0.05, value_max_bytes=64)
    ticks = Ticks(0.02)
    hog, hog_transport = make_channel(Peer(), limits, cpu_clock=ticks, clock=clock)
    quiet, quiet_transport = make_channel(Peer(), limits, cpu_clock=Ticks(0.0), clock=clock)
    hog.data_received(calls(1))  # 0.02 s charged: within the 0.05 s burst
    hog.data_received(calls(2))
    assert hog_transport.reading
    hog.data_received(calls(3))  # 0.06 s: 0.01 s in debt
    assert not hog_transport.reading and hog.stats().paused == ("throttled",) and hog.stats().throttled == 1
    ticks.step = 0.0  # what follows costs nothing, so the debt stays 0.01 s
    hog.data_received(calls(4))  # already in the socket: waits until the debt is paid
    assert hog.stats().backlog == 1
    quiet.data_received(calls(1))
    assert quiet_transport.reading and quiet.stats().throttled == 0
    await asyncio.sleep(0.05)  # 0.01 s of debt at one CPU
    assert hog_transport.reading and hog.stats().backlog == 0
    assert hog.stats().cpu_seconds == pytest.approx(0.06) and hog.stats().throttled == 1



async def test_past_the_host_wide_total_the_channels_over_their_fair_share_are_paused_not_a_quiet_one() -> None:
    """Each channel within its own bucket, but together past the host's total: the two taking more
    than a fair share of it are paused, the quiet one sharing the total is not."""
    clock = asyncio.get_running_loop().time
    total = RateTotal(0.5, 0.05, clock=clock)  # half a CPU for all channels together
    own = ChannelLimits(1 << 20, 60.0, cpu_share=1.0, cpu_burst=60.0, value_max_bytes=64)  # never binds
    hogs = [make_channel(Peer(), own, label=f"hog-{n}", cpu_total=total, cpu_clock=Ticks(0.02), clock=clock)
            for n in (1, 2)]
    quiet, quiet_transport = make_channel(Peer(), own, label="quiet", cpu_total=total,
                                          cpu_clock=Ticks(0.001), clock=clock)
    quiet.data_received(calls(1))
    for i in range(1, 40):
        for hog, transport in hogs:
            if transport.reading:
                hog.data_received(calls(i))
    for hog, transport in hogs:
        assert not transport.reading and hog.stats().paused == ("throttled",)
        assert hog.stats().shared_pauses == 1 == hog.stats().throttled
        assert hog.stats().cpu_seconds > 0.5 / 3  # over a fair share of the total (3 active)
    quiet.data_received(calls(2))
    assert quiet_transport.reading and quiet.stats().throttled == quiet.stats().shared_pauses == 0
    assert total.stats().over_share.keys() == {"hog-1", "hog-2"}
    await asyncio.sleep(total.stats().debt_s + 0.02)  # the total's debt paid back
    assert all(transport.reading for _hog, transport in hogs)
    hogs[0][1].abort()  # a channel that ends no longer counts among those sharing the total
    assert total.stats().active == 2


async def test_many_cheap_read_batches_add_up_to_the_same_charge() -> None:
    """Each read batch of a single answer costs far less than the step at which the channel settles
    with its bucket; together they are charged all the same, and throttle the channel."""
    limits = ChannelLimits(1 << 20, 60.0, cpu_share=1.0, cpu_burst=0.05, value_max_bytes=64)
    channel, transport = make_channel(Peer(), limits, cpu_clock=Ticks(0.0001), clock=lambda: 0.0)  # no refill
    for i in range(1, 400):
        channel.data_received(calls(i))
    assert transport.reading
    assert channel.stats().cpu_seconds == pytest.approx(0.0399)  # what is not settled yet counts too
    for i in range(400, 520):
        channel.data_received(calls(i))
    assert not transport.reading and channel.stats().paused == ("throttled",)
    assert channel.stats().throttled == 1


async def test_the_loop_time_of_a_calls_task_is_charged_to_its_worker() -> None:
    """A verb that waits runs as a task after the read batch was charged; what that task computes
    on the loop (a long list of chats, say) is charged to the worker that called, and throttles it."""
    limits = ChannelLimits(1 << 20, 60.0, cpu_share=1.0, cpu_burst=0.05, value_max_bytes=64)
    _server, router, channel, transport = serving(4, limits, cpu_clock=Ticks(0.0),
                                                  clock=asyncio.get_running_loop().time)
    channel.data_received(frames(Call(1, "engine.get_chats", encoded({"session_id": "s"}))))
    assert transport.reading and channel.stats().cpu_seconds == 0.0
    (charge,) = router.charges
    charge(0.04)  # steps of the call's task, as `metered` reports them
    assert transport.reading
    charge(0.03)  # 0.02 s in debt
    assert not transport.reading and channel.stats().paused == ("throttled",)
    assert channel.stats().cpu_seconds == pytest.approx(0.07)
    await asyncio.sleep(0.05)
    assert transport.reading


async def test_debt_run_up_by_calls_while_throttled_is_paid_before_it_is_read_again() -> None:
    """Calls already read go on running while their channel is throttled: what they charge then
    is paid back too before the channel is read again (else every pause admits a new round of
    calls before the last one is paid for, and the worker gets more than its share)."""
    limits = ChannelLimits(1 << 20, 60.0, cpu_share=1.0, cpu_burst=0.05, value_max_bytes=64)
    _server, router, channel, transport = serving(4, limits, cpu_clock=Ticks(0.0),
                                                  clock=asyncio.get_running_loop().time)
    channel.data_received(frames(Call(1, "engine.get_chats", encoded({"session_id": "s"}))))
    (charge,) = router.charges
    charge(0.07)  # 0.02 s in debt: paused for 0.02 s
    charge(0.1)  # its task ran on meanwhile: 0.12 s in debt
    await asyncio.sleep(0.05)
    assert not transport.reading and channel.stats().paused == ("throttled",)
    await asyncio.sleep(0.15)
    assert transport.reading and channel.stats().throttled == 1

async def test_shared_debt_run_up_while_throttled_by_the_total_is_paid_before_it_is_read_again() -> None:
    """The same for the host-wide total: a channel paused for taking more than its fair share of
    an overspent total stays paused while its calls' tasks keep it over that share, not only until
    its own (here never binding) bucket is clear."""
    clock = asyncio.get_running_loop().time
    total = RateTotal(0.5, 0.005, window=0.1, clock=clock)  # half a CPU for all channels together
    own = ChannelLimits(1 << 20, 60.0, cpu_share=1.0, cpu_burst=60.0, value_max_bytes=64)  # never binds
    _server, router, channel, transport = serving(4, own, cpu_total=total, cpu_clock=Ticks(0.0), clock=clock)
    channel.data_received(frames(Call(1, "engine.get_chats", encoded({"session_id": "s"}))))
    (charge,) = router.charges
    charge(0.1)  # the total 0.19 s in debt, and the channel over its share: paused for 0.19 s
    assert not transport.reading and channel.stats().shared_pauses == 1
    charge(0.3)  # its task ran on meanwhile: the total 0.79 s in debt, the channel still over its share
    await asyncio.sleep(0.3)
    assert not transport.reading and channel.stats().paused == ("throttled",)
    await asyncio.sleep(total.stats().debt_s + 0.05)
    assert transport.reading and channel.stats().throttled == 1


# -- decode memory ------------------------------------------------------------------------------


async def test_a_result_value_past_the_cap_is_refused_without_being_decoded() -> None:
    channel, _transport = make_channel(Peer())
    small = channel.request(Health(channel.new_id()))
    big = channel.request(Health(channel.new_id()))
    channel.data_received(frames(Result(1, True, encoded({"healthy": True})),
                                 Result(2, True, encoded([{}] * 100))))
    assert await small == {"healthy": True}
    with pytest.raises(PluginError, match="result of 103 bytes is larger than the host decodes"):
        await big


async def test_hook_data_past_its_event_payload_cap_reaches_the_bus_undecoded() -> None:
    channel, _transport = make_channel(Peer(), ChannelLimits(1 << 20, 60.0, 1.0, 60.0, value_max_bytes=1 << 30))
    cap = PAYLOADS["message:received"].cap
    answers = []
    for data in ([{}] * 1000, [{}] * (cap + 1)):
        hook = Hook(channel.new_id(), 1, "message:received", {}, "s1", datetime.now(UTC), "host", {})
        answers.append(channel.hook(hook))
        channel.data_received(frames(Result(hook.id, True, encoded({"continue": True, "data": data}))))
    small, big = [await a for a in answers]
    assert small is not None and small.error is None and len(small.data) == 1000
    assert big is not None and big.error is None and big.data == Undecoded(len(encoded([{}] * (cap + 1))))
    # ...which the bus's payload check refuses, naming the cap
    assert problem("message:received", big.data) == f"{big.data.size} bytes, over the {cap}-byte cap of " \
                                                    "message:received (not decoded)"


def test_log_fields_past_their_cap_are_replaced_by_a_note() -> None:
    fields = {f"f{i}": "v" * 64 for i in range(100)}
    assert log_fields(Log("info", "m", encoded({"a": 1})), 1024) == {"a": 1}
    note = log_fields(Log("info", "m", encoded(fields)), 1024)
    assert note == {"fields": f"<{len(encoded(fields))} bytes, over the 1024-byte cap: not shown>"}
    ext = msgspec.Raw(msgspec.msgpack.encode({"f": msgspec.msgpack.Ext(7, b"x")}))
    assert log_fields(Log("info", "m", ext), 1024) == {"fields": "<undecodable: not shown>"}


async def test_a_stored_value_past_the_check_cap_stays_encoded_end_to_end(tmp_path: Any) -> None:
    db = SqliteDatabase(tmp_path / "kv.db")
    try:
        storage = PluginStorage(db, check_max_bytes=64)
        bomb = msgspec.Raw(msgspec.msgpack.encode([{}] * 1000))
        await storage.set_encoded("p", "k", bomb)
        assert storage.get_encoded("p", "k") == bytes(bomb)
        assert storage.usage("p") >= len(bomb)  # charged to its quota as stored
        with pytest.raises(StorageError, match="extension type 7"):  # small enough to be checked
            await storage.set_encoded("p", "x", msgspec.Raw(msgspec.msgpack.encode(msgspec.msgpack.Ext(7, b"x"))))
    finally:
        await db.close()
