"""Frames: how messages travel on the bridge channel, in both directions.

A frame is a 4-byte big-endian length followed by one msgpack-encoded message (see messages.py for
the messages). A length above the cap is a protocol violation: the stream cannot be
resynchronised, so FrameReader raises FrameTooLarge before buffering any of it. A frame that does
not decode into the reader's union is dropped and counted. msgpack extension types other than
timestamps are refused, so nothing but plain data can come out of a frame. No pickle anywhere.
This module knows bytes and msgspec only: no asyncio policy, no host or worker object.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from plugbox.errors import FrameTooLarge

__all__ = ["HEADER", "FrameReader", "FrameWriter", "append_frame", "encode_frame", "value_decoder"]

HEADER = struct.Struct("!I")


def _refuse_ext(code: int, data: memoryview) -> Any:
    # `data` is a view into the reader's buffer: the traceback of this exception must not keep it
    # alive, or the reader could no longer resize its buffer (BufferError) if the exception is kept.
    del data
    raise ValueError(f"msgpack extension type {code} is not allowed")


def value_decoder(kind: Any = Any) -> msgspec.msgpack.Decoder[Any]:
    """A decoder for a value a message carries encoded (`msgspec.Raw`), under the rules of a
    frame: no msgpack extension type but timestamps. Skipping over a Raw value checks only that
    it is well-formed, so each decode of one must go through here."""
    return msgspec.msgpack.Decoder(kind, ext_hook=_refuse_ext)


_encoder = msgspec.msgpack.Encoder()


_PLACEHOLDER = bytes(HEADER.size)


def append_frame(msg: msgspec.Struct, buf: bytearray) -> None:
    """Append `msg` to `buf` as one frame (header included), encoding in place. If `msg` cannot be
    encoded, `buf` is left as it was: a half-written frame would desynchronise the whole stream."""
    start = len(buf)
    buf += _PLACEHOLDER
    try:
        _encoder.encode_into(msg, buf, start + HEADER.size)
    except BaseException:
        del buf[start:]
        raise
    HEADER.pack_into(buf, start, len(buf) - start - HEADER.size)


def encode_frame(msg: msgspec.Struct) -> bytearray:
    """Encode `msg` as one frame (header included)."""
    buf = bytearray()
    append_frame(msg, buf)
    return buf


class _Transport(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def is_closing(self) -> bool: ...


class FrameWriter:
    """Coalesces outgoing frames so that what one side sends during an event-loop iteration leaves
    in at most two write()s — a syscall per frame was the largest cost of a pipelined bridge.

    `write` sends the first frame of an iteration at once (a lone request is not held back by the
    rest of the iteration) and batches the ones after it until one flush (call_soon). Inside a read callback,
    `cork()` ... `uncork()` holds the flush until the whole batch of incoming frames has been handled. Either
    way a batch leaves early once it holds `max_frames` frames: with many requests in flight the
    peer then starts on the first part while this side is still producing the rest, instead of
    the two sides taking turns on whole batches."""

    __slots__ = ("_buf", "_corked", "_frames", "_loop", "_max_bytes", "_max_frames", "_scheduled", "_transport")

    def __init__(self, transport: _Transport, loop: asyncio.AbstractEventLoop, max_frames: int = 16,
                 max_bytes: int | None = None) -> None:
        self._transport = transport
        self._loop = loop
        # The peer's frame cap. A frame over it would make the peer end the channel; with a cap
        # set, such a frame is never written and its sender gets FrameTooLarge to answer itself.
        self._max_bytes = max_bytes
        self._buf = bytearray()
        self._frames = 0
        self._max_frames = max_frames
        self._scheduled = False
        self._corked = False

    def _append(self, msg: msgspec.Struct) -> None:
        if self._max_bytes is None:  # (the host's side: the worker's cap is the host's to enforce)
            append_frame(msg, self._buf)
            return
        start = len(self._buf)
        append_frame(msg, self._buf)
        size = len(self._buf) - start - HEADER.size
        if size > self._max_bytes:
            del self._buf[start:]
            raise FrameTooLarge(size, self._max_bytes)

    def write(self, msg: msgspec.Struct) -> None:
        """FrameTooLarge (nothing written) when `msg` is over the peer's cap."""
        self._append(msg)
        self._frames += 1
        if self._frames >= self._max_frames:
            self._send()
        elif not self._scheduled and not self._corked:
            # The first frame since the last flush leaves at once, so the peer starts on it while
            # this side finishes its iteration; frames that follow in the same iteration batch up
            # behind it until the flush scheduled here.
            self._scheduled = True
            self._send()
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        self._send()

    def write_now(self, msg: msgspec.Struct) -> None:
        """Write `msg` (and anything batched before it) at once, unless corked: for a frame its
        sender is about to wait on, where nothing else in this iteration would join the batch."""
        self._append(msg)
        self._frames += 1
        if not self._corked:
            self._send()

    def _send(self) -> None:
        self._frames = 0
        if self._buf:
            buf, self._buf = self._buf, bytearray()  # the transport may keep a reference to it
            if not self._transport.is_closing():
                self._transport.write(buf)

    @property
    def buffered(self) -> int:
        """Bytes encoded but not yet handed to the transport."""
        return len(self._buf)

    def push(self) -> None:
        """Hand what is batched to the transport now, corked or not (the reader applies
        backpressure on the transport's queue, which it cannot see while frames wait here)."""
        self._send()

    def cork(self) -> None:
        """Hold every frame until `uncork` (use in try/finally around a read batch; a plain pair of
        calls, since a generator-based context manager per read cost more than the batching saved)."""
        self._corked = True

    def uncork(self) -> None:
        self._corked = False
        if self._buf:
            self._send()  # a flush already scheduled will find nothing left to send


_BAD = object()  # what `_decode_one` returns for a frame it dropped


class FrameReader:
    """Splits a byte stream into frames and decodes each into `kind`. Undecodable frames are
    counted in `bad_frames` and handed to `on_bad`; a declared length above `max_frame` raises
    FrameTooLarge before any of that frame is buffered."""

    __slots__ = ("_buf", "_decoder", "_max", "bad_frames", "on_bad")

    def __init__(self, kind: Any, max_frame: int, on_bad: Callable[[Exception], None] | None = None) -> None:
        self._decoder = msgspec.msgpack.Decoder(kind, ext_hook=_refuse_ext)
        self._max = max_frame
        self._buf = bytearray()
        self.bad_frames = 0
        self.on_bad = on_bad

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        if not buf:
            # The common case: a read that holds exactly one whole frame, decoded straight from
            # `data` without first copying it into the buffer.
            end = len(data)
            if end >= 4:
                size = HEADER.unpack_from(data)[0]
                if end == size + 4 and size <= self._max:
                    msg = self._decode_one(data, 4)
                    return [] if msg is _BAD else [msg]
        buf += data
        out: list[Any] = []
        pos = 0
        end = len(buf)
        too_large: int | None = None
        view = memoryview(buf)
        try:
            while end - pos >= 4:
                size = HEADER.unpack_from(buf, pos)[0]
                if size > self._max:
                    too_large = size
                    break
                if end - pos - 4 < size:
                    break
                msg = self._decode_one(view, pos + 4, pos + 4 + size)
                pos += 4 + size
                if msg is not _BAD:
                    out.append(msg)
        finally:
            view.release()
            # Whatever happens, the buffer keeps only an incomplete frame: never more than cap + 3
            # bytes. After an oversize length the stream cannot be resynchronised: keep nothing.
            # The tail moves to a new buffer rather than resizing this one in place: a view of it
            # kept alive elsewhere (a traceback an `on_bad` callback holds on to) would make an
            # in-place resize raise BufferError out of the reader.
            if too_large is not None:
                self._buf = bytearray()
            elif pos:
                self._buf = buf[pos:]
        if too_large is not None:
            raise FrameTooLarge(too_large, self._max)
        return out

    def _decode_one(self, data: bytes | memoryview, start: int, stop: int | None = None) -> Any:
        """Decode data[start:stop]; an undecodable frame is counted, reported and returned as _BAD."""
        frame = memoryview(data)[start:stop]
        try:
            # From a copy of the frame: a message that keeps a `msgspec.Raw` keeps a view of the
            # bytes it was decoded from, which must not be the reader's buffer (or the caller's).
            return self._decoder.decode(bytes(frame))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError) as exc:
            self.bad_frames += 1
            if self.on_bad is not None:
                self.on_bad(exc)
            return _BAD
        finally:
            frame.release()
