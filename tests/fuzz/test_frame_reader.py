"""Fuzzing the host's frame reader (SPEC §6, docs/internals.md): whatever bytes a worker writes,
`FrameReader.feed` returns decoded messages or drops and counts the frame; the only exception it
raises is FrameTooLarge, for a declared length above the cap, and its buffer never holds more
than one frame under the cap plus its header."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugbox.errors import FrameTooLarge
from plugbox.protocol import (
    HEADER,
    FrameReader,
    FrameWriter,
    HostMsg,
    Log,
    Search,
    WorkerMsg,
    append_frame,
    encode_frame,
    value_decoder,
)
from tests.fuzz._strategies import FUZZ, chunked, frame, nested, payloads, worker_msgs

_enc = msgspec.msgpack.Encoder()


def _model(stream: bytes, cap: int) -> tuple[list[int], int | None]:
    """Reference framing: the end offset of every complete frame, and the offset of the first
    header declaring more than `cap` bytes (None if there is none before the stream runs out)."""
    ends: list[int] = []
    pos = 0
    while len(stream) - pos >= 4:
        size = int.from_bytes(stream[pos:pos + 4], "big")
        if size > cap:
            return ends, pos
        if len(stream) - pos - 4 < size:
            break
        pos += 4 + size
        ends.append(pos)
    return ends, None


@FUZZ
@given(chunks=st.lists(st.binary(max_size=300), max_size=30), cap=st.integers(0, 600))
def test_arbitrary_bytes_only_ever_raise_frame_too_large(chunks: list[bytes], cap: int) -> None:
    seen: list[Exception] = []
    reader = FrameReader(WorkerMsg, cap, on_bad=seen.append)
    stream = b"".join(chunks)
    ends, oversize_at = _model(stream, cap)
    fed = decoded = 0
    for chunk in chunks:
        fed += len(chunk)
        if oversize_at is not None and fed >= oversize_at + 4:
            with pytest.raises(FrameTooLarge):
                reader.feed(chunk)
            return
        decoded += len(reader.feed(chunk))
        complete = [e for e in ends if e <= fed]
        assert decoded + reader.bad_frames == len(complete)
        assert len(seen) == reader.bad_frames
        assert len(reader._buf) == fed - (complete[-1] if complete else 0)
        assert len(reader._buf) < cap + 4  # bounded: at most one partial frame under the cap


@FUZZ
@given(msgs=st.lists(worker_msgs, min_size=1, max_size=12), cuts=st.lists(st.integers(0, 10**6), max_size=20))
def test_valid_frames_decode_whatever_the_chunking(msgs: list[msgspec.Struct], cuts: list[int]) -> None:
    stream = b"".join(bytes(encode_frame(m)) for m in msgs)
    reader = FrameReader(WorkerMsg, 1 << 20)
    out: list[object] = []
    for piece in chunked(stream, cuts):
        out += reader.feed(piece)
    assert reader.bad_frames == 0
    assert [_enc.encode(m) for m in out] == [_enc.encode(m) for m in msgs]  # NaN-safe equality
    assert len(reader._buf) == 0


@FUZZ
@given(payload=payloads, data=st.data())
def test_truncated_frame_waits_then_completes(payload: bytes, data: st.DataObject) -> None:
    whole = frame(payload)
    cut = data.draw(st.integers(0, len(whole) - 1))
    reader = FrameReader(WorkerMsg, 1 << 20)
    assert reader.feed(whole[:cut]) == []
    assert reader.bad_frames == 0 and len(reader._buf) == cut
    out = reader.feed(whole[cut:])
    assert len(out) + reader.bad_frames == 1
    assert len(reader._buf) == 0


@FUZZ
@given(before=st.lists(worker_msgs, max_size=4), cap=st.integers(0, 1 << 20), excess=st.integers(1, 2**32 - 1),
       body=st.binary(max_size=64))
def test_oversized_declared_length_raises_before_the_body_arrives(
    before: list[msgspec.Struct], cap: int, excess: int, body: bytes
) -> None:
    size = min(cap + excess, 2**32 - 1)
    reader = FrameReader(WorkerMsg, cap)
    good = b"".join(bytes(encode_frame(m)) for m in before if len(encode_frame(m)) - 4 <= cap)
    with pytest.raises(FrameTooLarge, match=f"frame of {size} bytes exceeds the {cap}-byte cap"):
        reader.feed(good + HEADER.pack(size) + body)


@FUZZ
@given(payload=payloads)
def test_any_payload_decodes_or_is_dropped_and_counted(payload: bytes) -> None:
    seen: list[Exception] = []
    reader = FrameReader(WorkerMsg, 1 << 20, on_bad=seen.append)
    out = reader.feed(frame(payload) + frame(_enc.encode(Log("info", "after"))))
    # The frame after it always arrives: one bad frame never desynchronises the stream.
    assert out and out[-1] == Log("info", "after")
    assert len(out) - 1 + reader.bad_frames == 1
    assert len(seen) == reader.bad_frames
    for exc in seen:
        assert isinstance(exc, msgspec.DecodeError | msgspec.ValidationError | ValueError | RecursionError)


@pytest.mark.parametrize("depth", [10, 900, 995, 1000, 5000, 100_000])
def test_deep_nesting_never_escapes_the_reader(depth: int) -> None:
    reader = FrameReader(WorkerMsg, 1 << 20)
    out = reader.feed(frame(b"\x94\xa3log\xa4info\xa1m\x81\xa1k" + b"\x91" * depth + b"\xc0"))
    assert len(out) + reader.bad_frames == 1


@pytest.mark.parametrize("bad", [nested(5000), object(), 2**64, "\ud800"])
def test_an_unencodable_message_leaves_the_stream_intact(bad: object) -> None:
    """Regression: append_frame used to leave a zero-length header and half a message in the buffer
    when encoding failed, so every later frame on that channel was misread (a plugin returning data
    nested too deep broke the next plugin's channel in the hook chain)."""
    buf = bytearray(encode_frame(Search(1, {"q": "before"})))
    size = len(buf)
    with pytest.raises((TypeError, ValueError, RecursionError, OverflowError, UnicodeEncodeError)):
        append_frame(Search(2, {"q": bad}), buf)
    assert len(buf) == size
    append_frame(Search(3, {"q": "after"}), buf)
    from plugbox.protocol import HostMsg

    reader = FrameReader(HostMsg, 1 << 20)
    assert [m.id for m in reader.feed(bytes(buf))] == [1, 3]
    assert reader.bad_frames == 0


def test_frame_writer_survives_an_unencodable_message() -> None:
    sent: list[bytes] = []

    class Transport:
        def write(self, data: bytes | bytearray | memoryview) -> None:
            sent.append(bytes(data))

        def is_closing(self) -> bool:
            return False

    writer = FrameWriter(Transport(), loop=None, max_frames=1)  # type: ignore[arg-type]
    writer.write(Search(1, {"q": None}))
    with pytest.raises(RecursionError):
        writer.write(Search(2, {"q": nested(5000)}))
    writer.write(Search(3, {"q": None}))
    from plugbox.protocol import HostMsg

    reader = FrameReader(HostMsg, 1 << 20)
    assert [m.id for m in reader.feed(b"".join(sent))] == [1, 3]


def test_a_kept_decode_error_does_not_pin_the_reader_buffer() -> None:
    """Regression: refusing a msgpack extension type raised from a hook whose frame held a view of
    the reader's buffer; an `on_bad` that kept the exception made the next resize fail with
    BufferError, out of the reader."""
    kept: list[Exception] = []
    reader = FrameReader(HostMsg, 1 << 20, on_bad=kept.append)
    ext = frame(_enc.encode(["rep", 1, True, {"k": msgspec.msgpack.Ext(5, b"x")}, None, "error"]))
    assert reader.feed(ext + ext[:3]) == []
    assert reader.bad_frames == 1 and len(reader._buf) == 3
    assert reader.feed(ext[3:]) == []
    assert reader.bad_frames == 2 and len(reader._buf) == 0


def test_a_kept_encoded_value_does_not_pin_the_reader_buffer() -> None:
    """A message keeps its encoded value (`msgspec.Raw`) after the reader moved on; the extension
    type inside it is refused when the host decodes that value, not by the frame."""
    reader = FrameReader(WorkerMsg, 1 << 20)
    ext = frame(_enc.encode(["log", "info", "m", {"k": msgspec.msgpack.Ext(5, b"x")}]))
    kept = reader.feed(ext + ext[:3])
    assert [type(m) for m in kept] == [Log] and len(reader._buf) == 3
    kept += reader.feed(ext[3:])
    assert len(kept) == 2 and len(reader._buf) == 0
    with pytest.raises(ValueError, match="extension type 5"):
        value_decoder().decode(kept[0].fields)


def test_an_oversize_length_leaves_nothing_buffered() -> None:
    # Found by test_worker_runtime_survives_any_stream: a stream desynchronised into an oversize
    # length raised before the consumed bytes were trimmed, so the reader kept the whole chunk.
    reader = FrameReader(WorkerMsg, 64)
    good = bytes(encode_frame(Log("info", "x")))
    with pytest.raises(FrameTooLarge):
        reader.feed(good * 3 + HEADER.pack(65) + b"y" * 70)
    assert len(reader._buf) == 0
