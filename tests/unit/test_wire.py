"""FrameWriter and FrameReader: how frames leave and arrive (the bridge's latency and throughput
depend on both; the fuzz suite covers hostile input)."""

from __future__ import annotations

import asyncio

import pytest

from plugbox.errors import FrameTooLarge
from plugbox.protocol import FrameReader, FrameWriter, HostMsg, Ping, Search, encode_frame
from plugbox.protocol.frames import HEADER


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def ids(chunks: list[bytes]) -> list[int]:
    return [m.id for m in FrameReader(HostMsg, 1 << 20).feed(b"".join(chunks))]


async def test_a_lone_frame_leaves_at_once_and_followers_batch_until_the_iteration_ends() -> None:
    transport = Transport()
    writer = FrameWriter(transport, asyncio.get_running_loop())
    writer.write(Ping(1))
    assert ids(transport.writes) == [1]  # not held back by the rest of the iteration
    for i in range(2, 6):
        writer.write(Ping(i))
    assert len(transport.writes) == 1
    await asyncio.sleep(0)  # the flush scheduled by the first frame
    assert len(transport.writes) == 2 and ids(transport.writes) == [1, 2, 3, 4, 5]
    writer.write(Ping(6))  # a new iteration: again at once
    assert len(transport.writes) == 3


async def test_corked_frames_leave_together_on_uncork() -> None:
    transport = Transport()
    writer = FrameWriter(transport, asyncio.get_running_loop())
    writer.cork()
    for i in range(1, 4):
        writer.write(Ping(i))
    assert transport.writes == []
    writer.uncork()
    assert len(transport.writes) == 1 and ids(transport.writes) == [1, 2, 3]
    writer.uncork()  # nothing left: no empty write
    assert len(transport.writes) == 1


async def test_a_long_batch_leaves_early_every_max_frames() -> None:
    transport = Transport()
    writer = FrameWriter(transport, asyncio.get_running_loop(), max_frames=4)
    writer.cork()
    for i in range(1, 10):
        writer.write(Ping(i))
    assert [len(ids([w])) for w in transport.writes] == [4, 4]
    writer.uncork()
    assert ids(transport.writes) == list(range(1, 10))


async def test_write_now_sends_even_while_a_flush_is_pending() -> None:
    transport = Transport()
    writer = FrameWriter(transport, asyncio.get_running_loop())
    writer.write(Ping(1))
    writer.write(Ping(2))  # batched behind the first
    writer.write_now(Ping(3))
    assert ids(transport.writes) == [1, 2, 3] and len(transport.writes) == 2


def test_reader_decodes_a_whole_frame_a_split_frame_and_several_at_once() -> None:
    reader = FrameReader(HostMsg, 1 << 20)
    one = bytes(encode_frame(Search(1, {"k": "v"})))
    assert [m.id for m in reader.feed(one)] == [1]
    assert reader.feed(one[:3]) == [] and reader.feed(one[3:7]) == []
    assert [m.id for m in reader.feed(one[7:] + one + one[:5])] == [1, 1]
    assert [m.id for m in reader.feed(one[5:])] == [1]
    assert reader.bad_frames == 0 and len(reader._buf) == 0



async def test_after_uncork_a_lone_frame_leaves_at_once_again() -> None:
    transport = Transport()
    writer = FrameWriter(transport, asyncio.get_running_loop())
    writer.cork()
    writer.write(Ping(1))
    writer.uncork()
    await asyncio.sleep(0)
    writer.write(Ping(2))
    assert ids(transport.writes) == [1, 2] and len(transport.writes) == 2


async def test_frames_written_now_while_corked_count_towards_the_early_batch() -> None:
    transport = Transport()
    writer = FrameWriter(transport, asyncio.get_running_loop(), max_frames=4)
    writer.cork()
    writer.write_now(Ping(1))
    writer.write_now(Ping(2))
    writer.write(Ping(3))
    assert transport.writes == []  # corked, and three frames are not yet a batch
    writer.write(Ping(4))  # the fourth frame of the batch, two of them written "now"
    assert ids(transport.writes) == [1, 2, 3, 4] and len(transport.writes) == 1


def test_a_frame_carrying_a_msgpack_extension_is_dropped_saying_which() -> None:
    seen: list[Exception] = []
    reader = FrameReader(HostMsg, 1 << 20, on_bad=seen.append)
    ext = b"\x93\xa6search\x01\x81\xa1k\xd4\x05\x00"  # ["search", 1, {"k": <ext type 5>}]
    out = reader.feed(HEADER.pack(len(ext)) + ext + bytes(encode_frame(Ping(2))))
    assert [m.id for m in out] == [2] and reader.bad_frames == 1
    assert "msgpack extension type 5 is not allowed" in str(seen[0])


def test_a_frame_exactly_at_the_cap_is_read_whole_or_split() -> None:
    frame = bytes(encode_frame(Search(1, {"k": "v" * 40})))
    cap = len(frame) - 4
    assert [m.id for m in FrameReader(HostMsg, cap).feed(frame)] == [1]
    split = FrameReader(HostMsg, cap)
    assert split.feed(frame[:10]) == []
    assert [m.id for m in split.feed(frame[10:])] == [1]


async def test_a_frame_over_the_peers_cap_is_never_written_and_its_sender_is_told() -> None:
    transport = Transport()
    cap = len(encode_frame(Search(1, {"q": "x" * 50}))) - HEADER.size  # exactly this frame's body
    writer = FrameWriter(transport, asyncio.get_running_loop(), max_bytes=cap)
    writer.cork()
    writer.write(Search(1, {"q": "x" * 50}))  # at the cap: written
    with pytest.raises(FrameTooLarge, match=rf"exceeds the {cap}-byte cap"):
        writer.write(Search(2, {"q": "x" * 51}))
    with pytest.raises(FrameTooLarge):
        writer.write_now(Search(3, {"q": "x" * 51}))
    writer.write(Ping(4))
    writer.uncork()
    assert ids(transport.writes) == [1, 4]  # the batch around the refused frames is intact
