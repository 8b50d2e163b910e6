"""The host end of one worker's channel: frames in and out, requests matched to their answers.

Owns the transport, the frame reader and writer, the requests in flight (private) and the hook
requests among them, which are the host's own record of what the worker is doing for it (the
capability server reads them through `hook_events()` to guard against re-entry). Everything the
worker sends is untrusted: frames are size-capped and schema-validated by the FrameReader;
undecodable frames and frames the host did not expect are dropped and counted, and past
MAX_BAD_FRAMES end the channel. What the worker asks for (calls, registrations, logs) goes to the
`Peer`; this module serves nothing itself and knows no process.

When the channel closes, for whatever reason, every request in flight fails at once with
WorkerGone (hooks then resolve to `continue`) and the peer is told, once. A request whose waiter
gives up (a hook cut by its budget or the chain's, a search or health check past its timeout:
its future is cancelled), whoever cancelled it, no longer counts: not in `stats()`, not among the
hook events in flight; it is forgotten at the next sweep, which runs when the books reach twice
what they held after the last one (so they never hold more than about twice the live requests,
and no request pays for a callback of its own). A late answer to it is counted and dropped.

What a worker makes the host spend on its channel is bounded and charged to it (`ChannelLimits`):
- bytes queued to it: the transport's write buffer has a high-water mark; above it the channel
  stops reading the worker (`pause_reading`), keeps the rest of the current read batch as a
  backlog, holds the answers of calls that complete meanwhile (`answer`) and refuses new
  requests (`request`); a worker that leaves the queue above the mark for the drain timeout is
  ended, "not reading its channel";
- memory of the answers it holds (`held.py`): past `held_max`, the next answer is replaced by an
  error naming the limit, so its call fails (the calls in flight bound how many answers wait,
  not how large they are);
- the host's memory, all workers together (`plugbox.totals.held`): every byte kept for the worker,
  its whole queue (the transport's write buffer and the frames the writer has not handed it yet,
  below the mark too) and the answers it holds, is charged to its holding of the host's
  `channel_bytes_total`. The queue is measured when it crosses the mark (`pause_writing`,
  `resume_writing`) and by the host's one periodic sweep over every channel
  (`channel_bytes_sweep_ms`, plugbox.totals.sweep): in between, what the queues really keep can
  exceed the total by what they grew since the last sweep, each at most to its mark (a worker that
  reads just slowly enough to stay below it is never paused, but it is charged). Past that total,
  an answer of a worker over its fair share is replaced by an error naming it, and the worker
  keeping the most over its share is ended; a worker within its share never is;
- host CPU: the time spent handling its frames, and the loop time of its calls' tasks (`charge`),
  is charged to a token bucket (the loop thread's CPU time, so that time the host process spends
  preempted by others is charged to no plugin); in debt, its channel alone stops being read until the debt is
  paid back (throttled), however busy it keeps the host. The same time is charged to the host-wide
  total of all channels (`plugbox.totals.rate`), which pauses it too while that total is overspent
  and it takes more than a fair share of it.
(Longer than most modules: both pauses act on the read path that dispatches frames, one state
machine that would be harder to follow split in two; the host-wide books are kept in
plugbox.totals.held, and the channel only tells them what it keeps, where it starts and stops keeping
it.) Decoding values under caps: values.py.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import msgspec

from plugbox._ratelimit import TokenBucket
from plugbox.bridge.held import memory_of
from plugbox.bridge.values import hook_data_cap, hook_result, result_value
from plugbox.errors import FrameTooLarge, PluginError, WorkerGone
from plugbox.protocol import (
    NIL,
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
    Reply,
    Result,
    WorkerMsg,
)
from plugbox.sdk import HookResult
from plugbox.settings import DEFAULTS
from plugbox.totals.held import HeldTotal
from plugbox.totals.rate import RateTotal

__all__ = ["MAX_BAD_FRAMES", "Channel", "ChannelLimits", "ChannelStats", "Peer"]

log = logging.getLogger("plugbox.bridge")

MAX_BAD_FRAMES = 100
_SWEEP_MIN = 64  # requests on the books before the first sweep for abandoned ones
# Host time a channel runs up before it is settled with its CPU bucket: a read batch of one frame
# (a hook answer) would otherwise spend a third of its cost on the bucket. Far below any burst.
_SETTLE_S = 0.0005


class Peer(Protocol):
    """What the channel hands on: the worker's own requests, and the news that it is gone."""

    def on_call(self, msg: Call) -> None: ...

    def on_register(self, msg: Register) -> None: ...

    def on_log(self, msg: Log) -> None: ...

    def on_lost(self, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    """What one worker's channel may make the host spend (from Settings: `client.channel_limits`)."""

    high_water: int  # bytes queued to the worker before the channel stops reading it
    drain_timeout: float  # seconds above the high-water mark before the worker is ended
    cpu_share: float  # host CPU its frames may take, in CPUs (0.5: half of one)
    cpu_burst: float  # host CPU seconds it may take at once
    value_max_bytes: int  # largest result value decoded with no schema to bound it
    held_max: int = DEFAULTS.channel_held_max_bytes  # memory of the answers held while above the mark


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """A read-only view of the channel's books (for metrics and tests)."""

    requests_in_flight: int
    hooks_in_flight: int
    pings_in_flight: int
    late_replies: int
    bad_frames: int
    gone: str | None
    queued_bytes: int = 0  # to the worker, not yet written to its socket
    backlog: int = 0  # frames read from it, not yet handled
    held_answers: int = 0  # answers waiting for the queue to drain
    held_bytes: int = 0  # the memory they take (held.py)
    refused_answers: int = 0  # answers replaced by an error past held_max, or past its share of the host's
    paused: tuple[str, ...] = ()  # why its channel is not being read ("backpressure", "throttled")
    backpressure_pauses: int = 0
    throttled: int = 0  # times its channel was paused for CPU debt
    cpu_seconds: float = 0.0  # host CPU charged to it
    shared_pauses: int = 0  # pauses for taking more than its fair share of the host-wide total
    kept_bytes: int = 0  # charged to the host-wide channel_bytes_total: the queue as last measured, held answers


class Channel(asyncio.Protocol):
    def __init__(self, peer: Peer, max_frame: int, label: str, limits: ChannelLimits, *,
                 cpu_total: RateTotal | None = None,
                 host_bytes: HeldTotal | None = None,
                 cpu_clock: Callable[[], float] = time.thread_time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._peer = peer
        self._label = label  # the plugin id, for logs and errors
        self._reader = FrameReader(WorkerMsg, max_frame, on_bad=self._bad_frame)
        self._transport: asyncio.Transport | None = None
        self._writer: FrameWriter | None = None
        self._loop = asyncio.get_running_loop()
        self._limits = limits
        self._backlog: collections.deque[Any] = collections.deque()
        self._held: collections.deque[tuple[Reply, Callable[[], None] | None, int]] = collections.deque()
        self._held_bytes = 0
        self._refused_answers = 0
        # its share of the bytes kept for all workers (without the host's books: bounded per plugin only)
        self._kept = (host_bytes or HeldTotal(1 << 62)).holding(label, self._over_host_total, self._measure_queue)
        self._queue_kept = 0  # of it, the queue to the worker as last measured
        self._refused_host_wide = 0
        self._blocked = False  # the transport's queue to the worker is above the high-water mark
        self._paused: set[str] = set()
        self._drain_timer: asyncio.TimerHandle | None = None
        self._throttle_timer: asyncio.TimerHandle | None = None
        self._cpu_clock = cpu_clock  # the loop thread's CPU time spent handling this worker's frames
        self._cpu = TokenBucket(limits.cpu_share, limits.cpu_burst, clock)
        self._cpu_total = cpu_total  # the host-wide total, shared with every other channel
        self._shared_pauses = 0
        self._cpu_spent = 0.0  # charged to its bucket
        self._unsettled = 0.0  # spent, not yet charged to its bucket (under _SETTLE_S)
        self._backpressure_pauses = 0
        self._throttled = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._sweep_at = _SWEEP_MIN  # forget the abandoned requests once the books hold more
        self._hooks: dict[int, str] = {}  # id -> event of each hook request in flight
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._late = 0
        self._gone: str | None = None
        self.hello: asyncio.Future[Hello] = self._loop.create_future()

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=self._limits.high_water, low=self._limits.high_water // 2)
        self._writer = FrameWriter(self._transport, self._loop)

    def data_received(self, data: bytes) -> None:
        started = self._cpu_clock()
        writer = self._writer
        if writer is None:
            return
        writer.cork()  # answers given inline while handling this batch leave in one write
        try:
            self._received(data)
        finally:
            writer.uncork()
            # (`_charge`, inlined: a hook answer often comes in a read batch of its own)
            self._unsettled += self._cpu_clock() - started
            if self._unsettled >= _SETTLE_S:
                self.charge(0.0)

    def pause_writing(self) -> None:
        """The queue to the worker went above the high-water mark: read nothing more from it
        until it drains, and end it if it does not within the drain timeout."""
        self._blocked = True
        self._backpressure_pauses += 1
        self._pause("backpressure")
        # (charged once the callback that wrote has finished, with what the rest of it queued)
        self._loop.call_soon(self._charge_queue)
        if self._drain_timer is None:
            self._drain_timer = self._loop.call_later(self._limits.drain_timeout, self._not_draining)

    def resume_writing(self) -> None:
        self._blocked = False
        self._charge_queue()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        self._resume("backpressure")

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._drain_timer, self._throttle_timer):
            if timer is not None:
                timer.cancel()
        self._backlog.clear()
        self._held.clear()
        self._held_bytes = 0
        if self._cpu_total is not None:
            self._cpu_total.forget(self._label)
        self._kept.close()
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
        """Send one request; the future of its answer (the caller applies any budget). Refused
        while the queue to the worker is above the high-water mark: it is not reading, and the
        host's own requests must not grow that queue either (a hook sees a handler error)."""
        self._check_open()
        if self._blocked:
            raise PluginError(f"plugin {self._label!r} is not reading its channel: "
                              f"{self._queued()} bytes queued to it")
        self._writer.write(msg)  # type: ignore[union-attr]  # (checked open)
        fut: asyncio.Future[Any] = self._loop.create_future()
        pending = self._pending
        pending[msg.id] = fut
        if len(pending) > self._sweep_at:
            self.forget_abandoned()
        return fut

    def hook(self, msg: Hook) -> asyncio.Future[HookResult | None]:
        """Send one hook request: the future of its HookResult (None: continue, data unchanged).
        The bus bounds the wait; cancelling the future takes the request off the books."""
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

    def answer(self, reply: Reply, handed: Callable[[], None] | None = None) -> None:
        """Send the answer to a worker's call; `handed` is called once it has been handed to the
        transport, which may be later: while the queue to the worker is above the high-water
        mark, answers wait here (and their calls keep their slots, see serving.py)."""
        if self._blocked or self._held:
            self._hold(reply, handed)
            return
        self.send(reply)
        if handed is not None:
            handed()
        self._check_queue()

    def _hold(self, reply: Reply, handed: Callable[[], None] | None) -> None:
        room = self._limits.held_max - self._held_bytes
        size = memory_of(reply, room)
        if size > room and self._held:
            self._refused_answers += 1
            if self._refused_answers == 1:
                log.warning("plugin %s: not reading its channel; answers past %d bytes held are refused",
                            self._label, self._limits.held_max)
            reply = Reply(reply.id, False, None, (
                f"answer of about {size} bytes refused: plugin {self._label!r} is not reading its channel "
                f"({self._held_bytes} bytes of answers already wait for it; channel_held_max_bytes = "
                f"{self._limits.held_max})"))
            size = memory_of(reply, room)
        if not self._kept.keep(size):
            self._refused_answers += 1
            if not self._refused_host_wide:
                log.warning("plugin %s: not reading its channel; answers past its fair share of "
                            "channel_bytes_total are refused", self._label)
            self._refused_host_wide += 1
            reply = Reply(reply.id, False, None, (
                f"answer of about {size} bytes refused: plugin {self._label!r} is not reading its channel and "
                f"keeps {self._kept.kept} bytes, over its fair share of the host's channel_bytes_total"))
            size = memory_of(reply, room)
            self._kept.force(size)  # (a small error: the calls in flight bound how many)
        self._held_bytes += size
        self._held.append((reply, handed, size))

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
        """The events of the hook requests in flight to this worker (the host's record), those
        whose waiter gave up left out."""
        if not self._hooks:
            return frozenset()
        pending = self._pending
        return frozenset(event for req_id, event in self._hooks.items() if not pending[req_id].done())

    def forget_abandoned(self) -> None:
        """Forget the requests whose waiter gave up (their future is done, and no answer took them
        off the books): a late answer to one is then counted as late."""
        for req_id in [i for i, fut in self._pending.items() if fut.done()]:
            del self._pending[req_id]
            self._hooks.pop(req_id, None)
        self._sweep_at = max(_SWEEP_MIN, 2 * len(self._pending))

    def stats(self) -> ChannelStats:
        self.forget_abandoned()  # (not on any hot path: the books as they really are)
        return ChannelStats(len(self._pending), len(self._hooks), len(self._pongs), self._late,
                            self._reader.bad_frames, self._gone, self._queued(), len(self._backlog),
                            len(self._held), self._held_bytes, self._refused_answers,
                            tuple(sorted(self._paused)), self._backpressure_pauses,
                            self._throttled, self._cpu_spent + self._unsettled, self._shared_pauses,
                            self._kept.kept)

    def abort(self, reason: str) -> None:
        """End the channel now; `reason` is what every waiter and the peer will be told."""
        if self._gone is None:
            self._gone = reason
        self._kept.close()  # (the transport drops its queue now, the held answers go at connection_lost)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- what the worker makes the host spend --
    def _queued(self) -> int:
        transport, writer = self._transport, self._writer
        if transport is None or writer is None:
            return 0
        return transport.get_write_buffer_size() + writer.buffered

    def _charge_queue(self) -> None:
        """Charge the whole queue to the worker, as it is now, to the host's books (the difference
        from what was last charged for it)."""
        queued = self._queued() if self._gone is None else 0
        more, self._queue_kept = queued - self._queue_kept, queued
        if more > 0:
            self._kept.force(more)  # (already queued: if it is the heaviest past the total, it ends)
        elif more < 0:
            self._kept.release(-more)

    def _measure_queue(self) -> None:
        """The host's periodic sweep (`HeldTotal.measure`): charge the queue if it changed since it
        was last charged. With an empty queue, as most of the time, a compare and nothing more."""
        if self._queued() != self._queue_kept:
            self._charge_queue()

    def _over_host_total(self, reason: str) -> None:
        self.abort(f"not reading its channel: {reason}")

    def _check_queue(self) -> None:
        """While a read batch is corked, answers wait in the writer, where the transport's
        high-water mark cannot see them: hand them over once they reach it (which may pause)."""
        writer = self._writer
        if writer is not None and writer.buffered >= self._limits.high_water:
            writer.push()

    def _pause(self, why: str) -> None:
        if not self._paused and self._transport is not None:
            self._transport.pause_reading()
        self._paused.add(why)

    def _resume(self, why: str) -> None:
        """Lift one reason to stop reading; with none left, hand on what waited, then read again."""
        self._paused.discard(why)
        if self._paused or self._gone is not None:
            return
        started = self._cpu_clock()
        writer = self._writer
        if writer is not None:
            writer.cork()
        try:
            self._release_held()
            self._handle_backlog()
        finally:
            if writer is not None:
                writer.uncork()
            self._charge(started)
        if not self._paused and self._transport is not None and self._gone is None:
            self._transport.resume_reading()

    def _release_held(self) -> None:
        held = self._held
        while held and not self._blocked:
            reply, handed, size = held.popleft()
            self._held_bytes -= size
            self._kept.release(size)
            self.send(reply)
            if handed is not None:
                handed()
            self._check_queue()

    def _not_draining(self) -> None:
        self._drain_timer = None
        if self._blocked and self._gone is None:
            self.abort(f"not reading its channel: {self._queued()} bytes queued to it for "
                       f"{self._limits.drain_timeout:g} s")

    def _charge(self, started: float) -> None:
        """Charge the host time just spent on this worker's frames to its CPU bucket (once it
        adds up to _SETTLE_S)."""
        self._unsettled += self._cpu_clock() - started
        if self._unsettled >= _SETTLE_S:
            self.charge(0.0)  # (charges what is unsettled)

    def charge(self, spent: float) -> None:
        """Charge `spent` seconds of host time taken on this worker's behalf (its frames, the tasks
        of its calls) to its CPU bucket; in debt, stop reading it until the debt is paid."""
        spent += self._unsettled
        self._unsettled = 0.0
        self._cpu_spent += spent
        own = self._cpu.charge(spent)
        shared = self._cpu_total.charge(self._label, spent) if self._cpu_total is not None else 0.0
        debt = max(own, shared)
        if debt > 0 and self._throttle_timer is None and self._gone is None:
            self._throttled += 1
            self._shared_pauses += shared > own
            self._pause("throttled")
            self._throttle_timer = self._loop.call_later(debt, self._unthrottle)

    def _unthrottle(self) -> None:
        """The debt it was paused for is paid: read it again, unless its calls' tasks (which run on
        while it is paused) ran up more meanwhile, in its own bucket or in the host-wide total while
        it still takes more than its share of it; then wait for that too. (Reading it again in debt
        let each pause admit a new round of calls before the last round's cost was paid.)"""
        self._throttle_timer = None
        debt = self._cpu.charge(0.0)
        if self._cpu_total is not None:
            debt = max(debt, self._cpu_total.charge(self._label, 0.0))
        if debt > 0 and self._gone is None:
            self._throttle_timer = self._loop.call_later(debt, self._unthrottle)
            return
        self._resume("throttled")

    # -- receiving (every frame is untrusted) --
    def _received(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
        except FrameTooLarge as exc:
            self.abort(f"protocol violation: {exc}")
            return
        if self._paused or self._backlog:
            # Frames that arrive while paused (already in the socket's read buffer): after the rest
            self._backlog.extend(messages)
            self._handle_backlog()
            return
        for i, msg in enumerate(messages):
            if type(msg) is Result and self._gone is None:  # (the common frame, without `_handle`'s dispatch)
                try:
                    self._on_result(msg)
                except Exception as exc:  # as in `_handle`
                    self.count_bad(exc)
            else:
                self._handle(msg)
            if self._paused:
                # the queue to the worker filled up: the rest of the batch waits, bounded by the
                # read size, since nothing more is read until it drains
                self._backlog.extend(messages[i + 1:])
                return

    def _handle_backlog(self) -> None:
        backlog = self._backlog
        while backlog and not self._paused and self._gone is None:
            self._handle(backlog.popleft())

    def _handle(self, msg: Any) -> None:
        if self._gone is not None:
            return  # ended part-way through a batch: act on nothing more it sent
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
        event = self._hooks.pop(msg.id, None)
        if event is not None:
            if msg.ok and msg.value == NIL:  # the common answer: continue, data unchanged
                fut.set_result(None)
                return
            try:
                result = hook_result(msg, hook_data_cap(event, self._limits.value_max_bytes))
            except Exception as exc:  # the future must settle: nothing else will (it left the books)
                result = HookResult(error=f"hook result could not be read ({type(exc).__name__})")
            fut.set_result(result)
        elif msg.ok:
            try:
                fut.set_result(result_value(msg, self._limits.value_max_bytes))
            except (PluginError, msgspec.DecodeError, ValueError, RecursionError) as exc:
                fut.set_exception(exc if isinstance(exc, PluginError) else
                                  PluginError(f"result could not be decoded: {str(exc)[:200]}"))
        else:
            fut.set_exception(PluginError(msg.error or "plugin failed without a message"))
