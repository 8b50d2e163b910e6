"""The host end of one worker's channel: frames in and out, requests matched to their answers.

Owns the transport, the frame reader and writer, the requests in flight (private) and the hook
requests among them, which are the host's own record of what the worker is doing for it (the
capability server reads them through `hook_events()` to guard against re-entry). Everything the
worker sends is untrusted: frames are size-capped and schema-validated by the FrameReader;
undecodable frames and frames the host did not expect are dropped and counted, and past
MAX_BAD_FRAMES end the channel. What the worker asks for (calls, registrations, logs) goes to the
`Peer`; this module serves nothing itself and knows no process.

When the channel closes, for whatever reason, every request in flight fails at once with
WorkerGone (hooks then resolve to `continue`) and the peer is told, once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Any, Protocol, cast

from plugbox.errors import FrameTooLarge, PluginError, WorkerGone
from plugbox.protocol import (
    Call,
    FrameReader,
    FrameWriter,
    Hello,
    Hook,
    HostMsg,
    HostRequest,
    Log,
    Ping,
    Pong,
    Register,
    Result,
    WorkerMsg,
)
from plugbox.sdk import HookResult

__all__ = ["MAX_BAD_FRAMES", "Channel", "ChannelStats", "Peer"]

log = logging.getLogger("plugbox.bridge")

MAX_BAD_FRAMES = 100


class Peer(Protocol):
    """What the channel hands on: the worker's own requests, and the news that it is gone."""

    def on_call(self, msg: Call) -> None: ...

    def on_register(self, msg: Register) -> None: ...

    def on_log(self, msg: Log) -> None: ...

    def on_lost(self, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """A read-only view of the channel's books (for metrics and tests)."""

    requests_in_flight: int
    hooks_in_flight: int
    pings_in_flight: int
    late_replies: int
    bad_frames: int
    gone: str | None


def hook_result(msg: Result) -> HookResult:
    """A worker's hook answer other than a plain continue: {continue, data, error} as the bus
    wants it; anything else is an error."""
    if not msg.ok:
        return HookResult(error=msg.error or "hook handler failed without a message")
    res = msg.value
    if not isinstance(res, dict) or not isinstance(res.get("continue"), bool):
        return HookResult(error="hook result is not {continue, data, error}")
    err = res.get("error")
    return HookResult(data=res.get("data"), stop=not res["continue"],
                      error=err if isinstance(err, str) or err is None else str(err))


class Channel(asyncio.Protocol):
    def __init__(self, peer: Peer, max_frame: int, label: str) -> None:
        self._peer = peer
        self._label = label  # the plugin id, for logs and errors
        self._reader = FrameReader(WorkerMsg, max_frame, on_bad=self._bad_frame)
        self._transport: asyncio.Transport | None = None
        self._writer: FrameWriter | None = None
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._hooks: dict[int, str] = {}  # id -> event of each hook request in flight
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._late = 0
        self._gone: str | None = None
        self.hello: asyncio.Future[Hello] = self._loop.create_future()

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._writer = FrameWriter(self._transport, self._loop)

    def data_received(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            return
        writer.cork()  # answers given inline while handling this batch leave in one write
        try:
            self._received(data)
        finally:
            writer.uncork()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._gone is None:
            self._gone = "worker closed its channel"
        gone = WorkerGone(f"plugin {self._label!r} worker is gone: {self._gone}")
        for fut in [*self._pending.values(), *self._pongs.values()]:
            if not fut.done():
                fut.set_exception(gone)
        self._pending.clear()
        self._hooks.clear()
        self._pongs.clear()
        if not self.hello.done():
            self.hello.set_exception(gone)
            self.hello.exception()  # whoever waits sees it; nobody waiting is no error
        self._peer.on_lost(self._gone)

    # -- sending --
    def new_id(self) -> int:
        return next(self._ids)

    def send(self, msg: HostMsg) -> None:
        if self._writer is not None:
            self._writer.write(msg)

    def request(self, msg: HostRequest) -> asyncio.Future[Any]:
        """Send one request; the future of its answer (the caller applies any budget)."""
        self._check_open()
        self._writer.write(msg)  # type: ignore[union-attr]  # (checked open)
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[msg.id] = fut
        return fut

    def hook(self, msg: Hook) -> asyncio.Future[HookResult | None]:
        """Send one hook request: the future of its HookResult (None: continue, data unchanged).
        The bus bounds the wait; a cancelled future is forgotten by `forget_abandoned`."""
        fut = self.request(msg)
        self._hooks[msg.id] = msg.event
        return fut

    def ping(self) -> asyncio.Future[None]:
        self._check_open()
        ping_id = next(self._ids)
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pongs[ping_id] = fut
        self.send(Ping(ping_id))
        return fut

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def _check_open(self) -> None:
        if self._gone is not None:
            raise WorkerGone(self._gone)
        if self._writer is None:
            raise WorkerGone(f"plugin {self._label!r}: no channel to its worker yet")

    # -- the books --
    def hook_events(self) -> frozenset[str]:
        """The events of the hook requests in flight to this worker (the host's record)."""
        return frozenset(self._hooks.values()) if self._hooks else frozenset()

    def forget_abandoned(self) -> None:
        """Drop requests whose waiter gave up (a hook past its budget): a late answer to one is
        then counted as late, and a worker that never answers leaves nothing behind."""
        for req_id in [i for i, fut in self._pending.items() if fut.done()]:
            del self._pending[req_id]
            self._hooks.pop(req_id, None)

    def stats(self) -> ChannelStats:
        return ChannelStats(len(self._pending), len(self._hooks), len(self._pongs), self._late,
                            self._reader.bad_frames, self._gone)

    def abort(self, reason: str) -> None:
        """End the channel now; `reason` is what every waiter and the peer will be told."""
        if self._gone is None:
            self._gone = reason
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- receiving (every frame is untrusted) --
    def _received(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
        except FrameTooLarge as exc:
            self.abort(f"protocol violation: {exc}")
            return
        for msg in messages:
            if self._gone is not None:
                return  # ended part-way through this batch: act on nothing more it sent
            t = type(msg)
            try:
                if t is Result:
                    self._on_result(msg)
                elif t is Call:
                    self._peer.on_call(msg)
                elif t is Log:
                    self._peer.on_log(msg)
                elif t is Register:
                    self._peer.on_register(msg)
                elif t is Pong:
                    pong = self._pongs.pop(msg.id, None)
                    if pong is not None and not pong.done():
                        pong.set_result(None)
                elif t is Hello and not self.hello.done():
                    self.hello.set_result(msg)
                else:
                    self.count_bad(ValueError(f"unexpected {t.__name__} frame"))
            except Exception as exc:  # e.g. RecursionError on data nested just under the decoder's limit
                self.count_bad(exc)

    def count_bad(self, exc: Exception) -> None:
        """A frame that decoded but that the host could not use: dropped and counted like garbage."""
        self._reader.bad_frames += 1
        self._bad_frame(exc)

    def _bad_frame(self, exc: Exception) -> None:
        bad = self._reader.bad_frames
        if bad == 1 or bad % 50 == 0:
            log.warning("plugin %s: dropped a frame (%d so far): %s", self._label, bad, str(exc)[:200])
        if bad > MAX_BAD_FRAMES:
            self.abort(f"worker sent more than {MAX_BAD_FRAMES} undecodable frames")

    def _on_result(self, msg: Result) -> None:
        fut = self._pending.pop(msg.id, None)
        if fut is None or fut.done():
            self._hooks.pop(msg.id, None)
            self._late += 1
            if self._late == 1:
                log.warning("plugin %s: late reply to request %d dropped", self._label, msg.id)
            return
        if self._hooks.pop(msg.id, None) is not None:
            if msg.ok and msg.value is None:  # the common answer: continue, data unchanged
                fut.set_result(None)
                return
            try:
                result = hook_result(msg)
            except Exception as exc:  # the future must settle: nothing else will (it left the books)
                result = HookResult(error=f"hook result could not be read ({type(exc).__name__})")
            fut.set_result(result)
        elif msg.ok:
            fut.set_result(msg.value)
        else:
            fut.set_exception(PluginError(msg.error or "plugin failed without a message"))
