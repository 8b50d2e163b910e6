"""The host side of the sandbox tier: one `WorkerRuntime` per enabled untrusted plugin.

It spawns a confined worker (through the zygote), speaks the wire protocol over the worker's
channel, and maps the worker onto the host: hook proxies on the bus, capability calls through
the same router as built-ins (at most `max_calls_in_flight` at once), log relay, liveness pings.
Everything a worker sends is untrusted: frames are size-capped and schema-validated by the
FrameReader, undecodable ones are counted and, past a threshold, end the worker.

When the worker dies (crash, kill, OOM, closed channel), every in-flight request is rejected at
once with WorkerGone: hooks then resolve to `continue`, health to unhealthy, lifecycle calls fail;
and the manager is told, so it can restart with backoff.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from plugbox.bridge.cpuwatch import CpuWatch
from plugbox.bridge.process import WorkerProcess, describe_status
from plugbox.bridge.wire import (
    PROTOCOL_VERSION,
    Call,
    FrameReader,
    FrameTooLarge,
    FrameWriter,
    Hello,
    Log,
    Ping,
    Pong,
    Register,
    Reply,
    Request,
    Result,
    Shutdown,
    WorkerMsg,
)
from plugbox.confine.cgroups import Request as CgroupRequest
from plugbox.errors import (
    BridgeError,
    CapabilityError,
    CapabilityTimeout,
    ConfinementError,
    PluginError,
    PluginStateError,
    WorkerGone,
)
from plugbox.hooks import reentry_scope
from plugbox.sdk import HookResult

if TYPE_CHECKING:
    from plugbox.runtime import PluginHandle, RuntimeDeps

__all__ = ["WorkerRuntime", "missing_layers"]

log = logging.getLogger("plugbox.bridge")

MAX_BAD_FRAMES = 100
LOOP_BUSY_KILL = 0.9  # share of a liveness window the event-loop thread may stay runnable
MAX_REGISTRATIONS = 1024
GRACEFUL_EXIT_S = 1.0


def missing_layers(layers: list[dict[str, Any]] | None) -> list[str]:
    """Names of the confinement layers a worker needed but did not apply (not the opt-in ones it
    was not asked for)."""
    return [str(layer.get("name")) for layer in layers or [] if not layer.get("applied") and not layer.get("skipped")]


def _hook_result(msg: Result) -> HookResult:
    """A worker's hook answer other than a plain continue (`_on_result` settles that one, a null
    value, itself): {continue, data, error} as the bus wants it; anything else is an error."""
    if not msg.ok:
        return HookResult(error=msg.error or "hook handler failed without a message")
    res = msg.value
    if not isinstance(res, dict) or not isinstance(res.get("continue"), bool):
        return HookResult(error="hook result is not {continue, data, error}")
    err = res.get("error")
    return HookResult(data=res.get("data"), stop=not res["continue"],
                      error=err if isinstance(err, str) or err is None else str(err))


class _Channel(asyncio.Protocol):
    def __init__(self, runtime: WorkerRuntime) -> None:
        self._rt = runtime

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._rt.transport = cast(asyncio.Transport, transport)
        self._rt.writer = FrameWriter(self._rt.transport, asyncio.get_running_loop())

    def data_received(self, data: bytes) -> None:
        writer = self._rt.writer
        if writer is None:
            return
        writer.cork()
        try:
            self._rt.received(data)
        finally:
            writer.uncork()

    def connection_lost(self, exc: Exception | None) -> None:
        self._rt.channel_lost()


class WorkerRuntime:
    def __init__(self, entry: PluginHandle, deps: RuntimeDeps, plugin_dir: Path) -> None:
        self.entry = entry
        self.deps = deps
        self.plugin_dir = plugin_dir
        s = deps.settings
        self.max_calls = s.max_calls_in_flight
        self.liveness = s.liveness_window_ms / 1000
        self.reader = FrameReader(WorkerMsg, s.frame_max_bytes, on_bad=self._bad_frame)
        self.transport: asyncio.Transport | None = None
        self.writer: FrameWriter | None = None
        self.proc: WorkerProcess | None = None
        self.confinement: list[dict[str, Any]] | None = None
        self.scratch = s.data_path / "scratch" / entry.plugin_id
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.pongs: dict[int, asyncio.Future[None]] = {}
        self.deadlines: dict[int, float] = {}
        self.hook_requests: set[int] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every = 0.1
        self.hook_budget = s.hook_budget_ms / 1000
        self.ids = itertools.count(1)
        self.in_flight = 0
        self.calls: set[asyncio.Task[None]] = set()
        self.registrations = 0
        self.webhook_routes: set[str] = set()
        self.has_search = False
        self.late_replies = 0
        self.refused_calls = 0
        self._loop = asyncio.get_running_loop()
        self._hello: asyncio.Future[Hello] = self._loop.create_future()
        self._ping_task: asyncio.Task[None] | None = None
        self._cpu_watch: CpuWatch | None = None
        self._death_task: asyncio.Future[None] | None = None
        self._death: str | None = None
        self._death_counted = False  # the kill ends a hook timeout the manager already counted
        self._stopping = False
        self._stopped = False

    # -- sending --
    def _send(self, msg: Any) -> None:
        if self.writer is not None:
            self.writer.write(msg)

    @property
    def pid(self) -> int | None:
        """The worker's pid while one runs (the lifecycle's views and metrics read it)."""
        return self.proc.pid if self.proc is not None else None

    async def request(self, op: str, args: Any = None) -> Any:
        """Send one request and await its answer (the caller applies the budget)."""
        fut, req_id = self.submit(op, args)
        try:
            return await fut
        finally:
            self.pending.pop(req_id, None)

    def submit(self, op: str, args: Any, budget: float | None = None, hook: bool = False) -> tuple[Any, int]:
        """Send one request; return the future of its answer, with no coroutine in between.

        With `budget`, the future fails with TimeoutError once it has passed (enforced by one
        sweep timer per worker, not a timer per request: on the hook path a timer cost more than
        the rest of the dispatch). With `hook`, the answer arrives as a HookResult. A pending
        entry is removed by its answer, by the sweep, or by the worker's death."""
        if self._death is not None:
            raise WorkerGone(self._death)
        writer = self.writer
        if writer is None:
            raise BridgeError(f"plugin {self.entry.plugin_id!r}: no channel to its worker yet")
        req_id = next(self.ids)
        # Encode first: a request that cannot be encoded (say, hook data nested too deep) raises
        # here and leaves nothing pending behind. No answer can arrive before we return.
        writer.write(Request(req_id, op, args))
        loop = self._loop
        fut: asyncio.Future[Any] = loop.create_future()
        self.pending[req_id] = fut
        if hook:
            self.hook_requests.add(req_id)
        if budget is not None:
            self.deadlines[req_id] = loop.time() + budget
            if self._sweeper is None:
                self._sweep_every = max(0.005, min(0.1, budget / 20))
                self._sweeper = loop.call_later(self._sweep_every, self._sweep)
        return fut, req_id

    def _sweep(self) -> None:
        """Fail every request past its deadline; re-arm while any deadline is left."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for req_id, deadline in list(self.deadlines.items()):
            if deadline <= now:
                del self.deadlines[req_id]
                self.hook_requests.discard(req_id)
                fut = self.pending.pop(req_id, None)
                if fut is not None and not fut.done():
                    fut.set_exception(TimeoutError())
        self._sweeper = loop.call_later(self._sweep_every, self._sweep) if self.deadlines else None

    # -- receiving (every frame is untrusted) --
    def received(self, data: bytes) -> None:
        try:
            messages = self.reader.feed(data)
        except FrameTooLarge as exc:
            self._kill(f"protocol violation: {exc}")
            return
        for msg in messages:
            if self._death is not None:
                return  # killed part-way through this batch: act on nothing more it sent
            t = type(msg)
            try:
                if t is Result:
                    self._on_result(msg)
                elif t is Call:
                    self._on_call(msg)
                elif t is Log:
                    self.entry.logs.emit(msg.level, msg.message, msg.fields)
                elif t is Register:
                    self._on_register(msg)
                elif t is Pong:
                    pong = self.pongs.pop(msg.id, None)
                    if pong is not None and not pong.done():
                        pong.set_result(None)
                elif t is Hello and not self._hello.done():
                    self._hello.set_result(msg)
                else:
                    self.reader.bad_frames += 1  # valid, but not expected now: dropped and counted too
                    self._bad_frame(ValueError(f"unexpected {t.__name__} frame"))
            except Exception as exc:  # e.g. RecursionError on data nested just under the decoder's limit
                self.reader.bad_frames += 1  # a frame the host could not handle: dropped and counted
                self._bad_frame(exc)

    def _bad_frame(self, exc: Exception) -> None:
        if self.reader.bad_frames == 1 or self.reader.bad_frames % 50 == 0:
            log.warning("plugin %s: dropped a frame (%d so far): %s",
                        self.entry.plugin_id, self.reader.bad_frames, str(exc)[:200])
        if self.reader.bad_frames > MAX_BAD_FRAMES:
            self._kill(f"worker sent more than {MAX_BAD_FRAMES} undecodable frames")

    def _on_result(self, msg: Result) -> None:
        fut = self.pending.pop(msg.id, None)
        if fut is None or fut.done():
            self.late_replies += 1
            if self.late_replies == 1:
                log.warning("plugin %s: late reply to request %d dropped", self.entry.plugin_id, msg.id)
            return
        self.deadlines.pop(msg.id, None)
        if msg.id in self.hook_requests:
            self.hook_requests.discard(msg.id)
            if msg.ok and msg.value is None:  # the common answer: continue, data unchanged
                fut.set_result(None)
                return
            try:
                result = _hook_result(msg)
            except Exception as exc:  # the future must settle: nothing else will (it left `pending`)
                result = HookResult(error=f"hook result could not be read ({type(exc).__name__})")
            fut.set_result(result)
        elif msg.ok:
            fut.set_result(msg.value)
        else:
            fut.set_exception(PluginError(msg.error or "plugin failed without a message"))

    def _on_call(self, msg: Call) -> None:
        router = self.deps.router
        if router.is_sync(msg.verb):  # never waits: answer inline, in this read batch
            try:
                self._send(Reply(msg.id, True, router.invoke_now(self.entry, msg.verb, msg.args)))
            except CapabilityError as exc:
                self._send(Reply(msg.id, False, None, str(exc)))
            return
        if self.in_flight >= self.max_calls:
            self.refused_calls += 1
            self._send(Reply(msg.id, False, None,
                             f"{msg.verb}: too many capability calls in flight (max {self.max_calls})"))
            return
        self.in_flight += 1
        task = asyncio.ensure_future(self._serve_call(msg))
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    async def _serve_call(self, msg: Call) -> None:
        try:
            # Calls arrive from another process, so they do not inherit the calling handler's
            # context: rebuild the re-entry guard from the hook event the worker says it serves.
            with reentry_scope(self.entry.plugin_id, msg.origin):
                value = await self.deps.router.invoke(self.entry, msg.verb, msg.args)
            reply = Reply(msg.id, True, value)
        except CapabilityTimeout as exc:
            reply = Reply(msg.id, False, None, str(exc), "timeout")
        except CapabilityError as exc:
            reply = Reply(msg.id, False, None, str(exc))
        finally:
            self.in_flight -= 1
        self._send(reply)

    def _on_register(self, msg: Register) -> None:
        self.registrations += 1
        if self.registrations > MAX_REGISTRATIONS:
            if self.registrations == MAX_REGISTRATIONS + 1:
                log.warning("plugin %s: more than %d registrations; ignoring the rest",
                            self.entry.plugin_id, MAX_REGISTRATIONS)
            return
        try:
            if msg.what == "hook":
                self.deps.bus.register(
                    self.entry.plugin_id, msg.name, self._hook_proxy(msg.handler_id), msg.priority, self_timed=True
                )
            elif msg.what == "webhook":
                self.entry.check_webhook_route(msg.name)
                self.webhook_routes.add(msg.name)
            elif msg.what == "search":
                self.entry.check_search_provider()
                self.has_search = True
            else:
                self._bad_frame(ValueError(f"unknown registration {msg.what[:32]!r}"))
        except CapabilityError as exc:
            self.entry.logs.emit("warning", f"registration refused: {exc}")

    def _hook_proxy(self, handler_id: int) -> Any:
        def proxy(event: str, data: Any, session_id: str | None, timestamp: datetime, source: str,
                  config: dict[str, Any]) -> Any:  # a future of HookResult (see HookBus, self_timed)
            args = [handler_id, event, data, session_id, timestamp, source, config]
            return self.submit("hook", args, self.hook_budget, hook=True)[0]

        return proxy

    # -- liveness --
    def hook_timed_out(self) -> None:
        """A hook ran past its budget: ping; no pong within the liveness window → kill."""
        if self._ping_task is None and self._death is None:
            self._ping_task = asyncio.ensure_future(self._liveness_check())

    async def _liveness_check(self) -> None:
        """Ping; no pong within the window means the worker's event loop is stuck: kill it.

        A pong alone proves little: while a sync handler spins, a plugin thread can read the
        ping off the channel and forge the answer. What it cannot forge is the scheduler's
        account of the event-loop thread, so the check watches that thread for the whole window:
        an idle loop (an async handler that merely waits, asleep in epoll) stays; one that was
        runnable throughout — on a CPU or waiting in the run queue for one, so a busy machine
        does not hide it — is a runaway."""
        loop = asyncio.get_running_loop()
        ping_id = next(self.ids)
        fut: asyncio.Future[None] = loop.create_future()
        self.pongs[ping_id] = fut
        started, cpu_before = loop.time(), self._loop_thread_runnable()
        self._send(Ping(ping_id))
        try:
            async with asyncio.timeout(self.liveness):
                await fut
            await asyncio.sleep(max(0.0, started + self.liveness - loop.time()))
            cpu_after = self._loop_thread_runnable()
            if cpu_before is not None and cpu_after is not None:
                busy = (cpu_after - cpu_before) / max(loop.time() - started, 1e-3)
                if busy >= LOOP_BUSY_KILL:
                    self._death_counted = self._death is None
                    self._kill(f"runaway: its event loop stayed runnable ({busy:.0%}) for the whole "
                               f"{self.liveness:g} s liveness window after a hook ran past its budget")
        except TimeoutError:
            self._death_counted = self._death is None
            self._kill(f"unresponsive: no answer to the liveness ping within {self.liveness:g} s")
        finally:
            self.pongs.pop(ping_id, None)
            self._ping_task = None

    def _loop_thread_runnable(self) -> float | None:
        """Seconds the worker's main (event-loop) thread spent on a CPU or in the run queue
        (/proc schedstat); None if unreadable."""
        if self.proc is None:
            return None
        pid = self.proc.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
                on_cpu_ns, waiting_ns, _slices = f.read().split()
        except (OSError, ValueError):
            return None
        return (int(on_cpu_ns) + int(waiting_ns)) / 1e9

    # -- death --
    def _kill(self, reason: str) -> None:
        if self._death is None:
            self._death = reason
        if self.proc is not None:
            self.proc.kill()
        if self.transport is not None:
            self.transport.abort()

    def channel_lost(self) -> None:
        if self._cpu_watch is not None:
            self._cpu_watch.stop()
        if self.proc is not None:
            self.proc.kill()  # a worker that closed its channel is done, whatever it intends
        first = self._death is None
        if first:
            self._death = "worker closed its channel"
        gone = WorkerGone(f"plugin {self.entry.plugin_id!r} worker is gone: {self._death}")
        for fut in list(self.pending.values()) + list(self.pongs.values()):
            if not fut.done():
                fut.set_exception(gone)
        if not self._hello.done():
            self._hello.set_exception(gone)
        self.pending.clear()
        for task in self.calls:
            task.cancel()
        if not self._stopping and self._death_task is None:
            self._death_task = asyncio.ensure_future(self._report_death())

    async def _report_death(self) -> None:
        reason = self._death or "worker exited"
        if self.proc is not None:
            status = await self.proc.wait(1.0)
            if status is not None and status >= 0:
                reason = f"{reason} ({describe_status(status)})"
        if not self._stopping:
            self.deps.on_failure(self.entry, reason, self._death_counted)

    # -- PluginRuntime --
    async def start(self) -> None:
        s = self.deps.settings
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True, mode=0o700)
        self.proc = await self.deps.zygote.spawn({
            "plugin_id": self.entry.plugin_id,
            "plugin_dir": str(self.plugin_dir),
            "scratch_dir": str(self.scratch.resolve()),
            "memory_bytes": s.worker_memory_bytes,
            "open_files": s.worker_open_files,
            "file_size_bytes": s.worker_file_size_bytes,
            "scratch_bytes": s.worker_scratch_bytes,
            "frame_max_bytes": s.frame_max_bytes,
            "netns": s.use_netns,
            "degraded": s.confinement == "degraded",
            "uids": s.worker_uids,
            "cgroup": CgroupRequest(mode=s.worker_cgroups, parent=s.cgroup_parent,
                                    cpu_quota_percent=s.worker_cpu_quota_percent,
                                    memory_bytes=s.worker_cgroup_memory_bytes, pids_max=s.worker_pids_max),
        })
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: _Channel(self), sock=self.proc.channel)
        hello = await self._hello
        self.confinement = hello.layers
        if hello.error is not None:
            failed = next((layer for layer in hello.layers if not layer.get("applied")), {})
            raise ConfinementError(str(failed.get("name", "?")), str(failed.get("detail", hello.error)))
        if hello.version != PROTOCOL_VERSION:
            raise BridgeError(f"worker speaks protocol {hello.version}, host {PROTOCOL_VERSION}")
        if s.worker_cpu_limit_percent:
            self._cpu_watch = CpuWatch(self.proc.pid, s.worker_cpu_limit_percent / 100,
                                       s.worker_cpu_window_ms / 1000, self._kill)
            self._cpu_watch.start()
        missing = missing_layers(hello.layers)
        if missing:  # only possible in the operator's degraded mode: say so, loudly, every start
            warning = f"DEGRADED confinement: running without {', '.join(missing)}"
            log.warning("plugin %s: %s", self.entry.plugin_id, warning)
            self.entry.logs.emit("warning", warning)
        m = self.entry.manifest
        await self.request("load", {
            "plugin_id": m.id,
            "plugin_dir": str(self.plugin_dir),
            "main": m.main,
            "config": dict(self.entry.config),
            "permissions": sorted(m.permissions),
            "routes": [r.route for r in m.ingress],
        })

    async def lifecycle(self, method: str) -> None:
        await self.request("lifecycle", method)

    async def config_changed(self, config: dict[str, Any]) -> None:
        await self.request("config", config)

    async def health(self) -> dict[str, Any]:
        result = await self.request("health")
        return result if isinstance(result, dict) else {"healthy": bool(result), "message": ""}

    async def webhook(self, route: str, request: dict[str, Any]) -> dict[str, Any]:
        if route not in self.webhook_routes:
            return {"status": 404, "body": {"error": f"no webhook handler for route {route!r}"}}
        result = await self.request("webhook", {"route": route, "request": request})
        return result if isinstance(result, dict) else {"status": 200, "body": result}

    async def search(self, query: dict[str, Any]) -> Any:
        if not self.has_search:
            raise PluginStateError(f"plugin {self.entry.plugin_id!r} registered no search provider")
        return await self.request("search", query)

    async def stop(self) -> None:
        """Graceful close, bounded wait, kill. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = self._stopping = True
        proc = self.proc
        if proc is not None:
            self._send(Shutdown())
            if self.writer is not None:
                self.writer.flush()
            if await proc.wait(GRACEFUL_EXIT_S) is None:
                proc.kill()
                await proc.wait(GRACEFUL_EXIT_S)
        if self.transport is not None:
            self.transport.abort()
        for task in list(self.calls):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._cpu_watch is not None:
            self._cpu_watch.stop()
        if proc is not None:
            proc.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
