"""What all workers' channels keep, together (plugbox.totals.held as the channel uses it): the whole
queue to a worker and its held answers are charged to the worker's holding of the host's total;
past it the worker over its share is refused or ended, the neighbour within its share keeps being
answered, and an ended or drained channel keeps nothing. Fake transports; no worker process."""

from __future__ import annotations

import asyncio

from plugbox.bridge.channel import Channel, ChannelLimits
from plugbox.protocol import Call, encoded
from plugbox.totals.held import HeldTotal
from tests.conftest import MakeHost
from tests.unit.test_channel_limits import FakeTransport, frames, make_channel, replies, serving
from tests.unit.test_channel_limits import Peer as InlinePeer

LIMITS = ChannelLimits(1000, 60.0, 1.0, 60.0, 64, held_max=1 << 20)
ANSWER = ["k" * 500] * 20  # an answer of a few kB of objects, as held


def _stop_reading(transport: object) -> None:
    transport.write(b"\0" * 1500)  # type: ignore[attr-defined]  # the worker reads nothing: above the mark


async def _holding_answers(books: HeldTotal, calls: int, max_calls: int) -> tuple[Channel, FakeTransport]:
    """A worker that made `calls` storage.set calls, then stopped reading: every answer held for it."""
    _server, router, channel, transport = serving(max_calls=max_calls, limits=LIMITS, host_bytes=books)
    channel.data_received(frames(*[Call(i, "storage.set", encoded({})) for i in range(1, calls + 1)]))
    _stop_reading(transport)
    await asyncio.sleep(0)
    for fut in router.waiting:
        fut.set_result(list(ANSWER))
    await asyncio.sleep(0)
    return channel, transport


async def test_the_whole_queue_is_charged_when_it_passes_the_mark_until_the_worker_drains_it() -> None:
    books = HeldTotal(1 << 20)
    peer = InlinePeer(reply_bytes=300)
    channel, transport = make_channel(peer, LIMITS, host_bytes=books)
    channel.data_received(b"".join(frames(Call(i, "storage.get", encoded({"key": "k"}))) for i in range(1, 6)))
    assert not transport.reading
    await asyncio.sleep(0)  # (charged once the read batch that queued them is over)
    queued = transport.get_write_buffer_size()
    assert queued > LIMITS.high_water and channel.stats().kept_bytes == queued == books.kept_by()["attacker"]
    transport.drain()
    assert channel.stats().kept_bytes == 0 and books.kept == 0


async def test_answers_of_a_worker_over_its_share_are_refused_naming_the_host_total() -> None:
    books = HeldTotal(64 << 10)
    flooder, transport = await _holding_answers(books, calls=20, max_calls=32)
    stats = flooder.stats()  # (each under the per-plugin limit, channel_held_max_bytes: 1 MiB)
    assert stats.refused_answers > 0 and books.refused["attacker"] == stats.refused_answers
    assert stats.gone is None and books.kept <= books.total and books.peak <= books.total
    answered = []
    while not transport.reading or flooder.stats().held_answers:
        answered += replies(transport.drain())
    flooder.flush()  # (the writer batches what the last drain released)
    answered += replies(transport.drain())
    refused = [r for r in answered if not r.ok]
    assert len(refused) == stats.refused_answers and len(answered) == 20
    assert "channel_bytes_total" in (refused[-1].error or "") and "fair share" in (refused[-1].error or "")
    assert books.kept == 0  # everything held was handed over: nothing left on the books


async def test_a_neighbour_within_its_share_is_answered_and_the_flooder_over_its_share_ended() -> None:
    books = HeldTotal(64 << 10)
    _server, router, flooder, transport = serving(max_calls=32, limits=LIMITS, host_bytes=books)
    _nserver, nrouter, neighbour, ntransport = serving(max_calls=32, limits=LIMITS, host_bytes=books)
    flooder.data_received(frames(*[Call(i, "storage.set", encoded({})) for i in range(1, 21)]))
    neighbour.data_received(frames(Call(1, "storage.set", encoded({}))))
    _stop_reading(transport)
    _stop_reading(ntransport)
    await asyncio.sleep(0)
    for fut in router.waiting:
        fut.set_result(list(ANSWER))
    await asyncio.sleep(0)
    assert flooder.stats().refused_answers > 0 and flooder.stats().gone is None  # it filled the total
    nrouter.waiting[0].set_result(list(ANSWER))  # the neighbour, within its share, needs room
    await asyncio.sleep(0)
    assert neighbour.stats().refused_answers == 0 and neighbour.stats().gone is None
    assert "channel_bytes_total" in (flooder.stats().gone or "") and transport.aborted
    assert books.kept == neighbour.stats().kept_bytes <= books.total
    answered = replies(ntransport.drain())
    neighbour.flush()  # (the writer batches what the drain released)
    answered += replies(ntransport.drain())
    assert [(r.id, r.value) for r in answered] == [(1, ANSWER)]
    assert books.kept == 0


async def test_the_heaviest_worker_past_the_host_total_is_ended_and_its_neighbour_kept() -> None:
    books = HeldTotal(8 << 10)
    _nserver, nrouter, neighbour, ntransport = serving(max_calls=32, limits=LIMITS, host_bytes=books)
    neighbour.data_received(frames(Call(1, "storage.set", encoded({}))))
    _stop_reading(ntransport)
    await asyncio.sleep(0)
    nrouter.waiting[0].set_result("small")
    await asyncio.sleep(0)
    peer = InlinePeer(reply_bytes=10_000)  # an inline answer: queued at once, past the mark
    flooder, transport = make_channel(peer, LIMITS, host_bytes=books)
    flooder.data_received(frames(*[Call(i, "storage.get", encoded({"key": "k"})) for i in range(1, 6)]))
    _stop_reading(transport)  # more queued past the mark: already spent, so it cannot be refused
    await asyncio.sleep(0)
    gone = flooder.stats().gone or ""
    assert "not reading its channel" in gone and "channel_bytes_total = 8192" in gone
    assert peer.lost and books.reclaimed == {"attacker": 1}
    assert neighbour.stats().gone is None and neighbour.stats().held_answers == 1
    assert books.kept == neighbour.stats().kept_bytes <= books.total


async def test_an_ended_channel_keeps_nothing_on_the_host_books() -> None:
    books = HeldTotal(1 << 20)
    channel, _transport = await _holding_answers(books, calls=3, max_calls=8)
    assert books.kept > 0 and channel.stats().held_answers == 3
    channel.abort("stopped")
    assert books.kept == 0 and books.kept_by() == {}


def _slow_reader(books: HeldTotal, label: str, reply_bytes: int, calls: int = 2) -> tuple[Channel, FakeTransport]:
    """A worker that asked for `calls` answers and has read none yet: its queue stays below the mark."""
    channel, transport = make_channel(InlinePeer(reply_bytes=reply_bytes), LIMITS, label=label, host_bytes=books)
    channel.data_received(frames(*[Call(i, "storage.get", encoded({"key": "k"})) for i in range(1, calls + 1)]))
    assert transport.reading and 0 < transport.get_write_buffer_size() < LIMITS.high_water
    return channel, transport


async def test_a_queue_below_the_mark_is_charged_at_the_sweep_and_released_as_the_worker_reads() -> None:
    books = HeldTotal(1 << 20)
    channel, transport = _slow_reader(books, "slow", reply_bytes=300)
    await asyncio.sleep(0)
    assert books.kept == 0  # never paused: nothing has measured it yet
    books.measure()
    queued = transport.get_write_buffer_size()
    assert channel.stats().kept_bytes == queued == books.kept_by()["slow"]
    del transport.queued[:200]  # the worker reads a little
    books.measure()
    assert books.kept == queued - 200
    transport.drain()
    books.measure()
    assert books.kept == 0 and channel.stats().kept_bytes == 0 and channel.stats().gone is None


async def test_slow_readers_below_their_marks_past_the_total_the_heaviest_is_ended_at_the_sweep() -> None:
    books = HeldTotal(1500)
    readers = [_slow_reader(books, f"slow{i}", reply_bytes=300 + 10 * i) for i in range(3)]
    neighbour, ntransport = _slow_reader(books, "neighbour", reply_bytes=100, calls=1)
    books.measure()  # ~2,300 bytes queued in all, each below its 1,000-byte mark
    gone = [channel.stats().gone or "" for channel, _t in readers]
    assert gone[0] == "" and "channel_bytes_total = 1500" in gone[2] and "over its fair share" in gone[2]
    assert set(books.reclaimed) <= {"slow1", "slow2"} and "slow2" in books.reclaimed
    assert books.kept <= books.total and books.peak <= books.total
    assert neighbour.stats().gone is None and "neighbour" not in books.reclaimed
    assert books.kept_by()["neighbour"] == ntransport.get_write_buffer_size() == neighbour.stats().kept_bytes


async def test_a_sweep_over_empty_queues_charges_no_one() -> None:
    books = HeldTotal(1 << 20)
    channels = [make_channel(InlinePeer(), LIMITS, label=f"p{i}", host_bytes=books) for i in range(50)]
    books.measure()
    assert books.kept == 0 and books.kept_by() == {} and books.measures == 1
    assert all(channel.stats().kept_bytes == 0 for channel, _t in channels)


async def test_a_started_host_measures_its_channel_books_until_it_stops(make_host: MakeHost) -> None:
    host = make_host(channel_bytes_sweep_ms=1)
    await asyncio.sleep(0.01)
    assert host.channel_bytes.measures == 0  # not before it starts
    await host.start()
    for _ in range(1000):
        if host.channel_bytes.measures >= 2:
            break
        await asyncio.sleep(0.005)
    assert host.channel_bytes.measures >= 2
    await host.stop()
    stopped_at = host.channel_bytes.measures
    await asyncio.sleep(0.02)
    assert host.channel_bytes.measures == stopped_at
