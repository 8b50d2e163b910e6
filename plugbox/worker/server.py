"""The worker's side of the bridge: loads the plugin's `main`, serves host requests (load,
lifecycle, hooks, config, health, webhooks, search) and turns `ctx.*` calls into bridge Calls.

Runs inside the confined process, after confinement, on its own event loop. It trusts nothing the
plugin returns: results are checked for plain data before they are encoded. Pings are answered
straight from the protocol callback, so a pong means the event loop itself is alive.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import inspect
import io
import itertools
import os
import socket
import sys
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any, cast

from plugbox.errors import CapabilityError, CapabilityTimeout, FrameTooLarge
from plugbox.protocol import (
    NIL,
    PROTOCOL_VERSION,
    Call,
    ConfigChange,
    FrameReader,
    FrameWriter,
    Health,
    Hello,
    Hook,
    HostMsg,
    HostRequest,
    LayerResult,
    Lifecycle,
    Load,
    Log,
    Ping,
    Pong,
    Register,
    Reply,
    Result,
    Search,
    Shutdown,
    Webhook,
    encoded,
)
from plugbox.sdk import Context, HookContext, HookResult, Plugin, check_plain
from plugbox.sdk._context import set_config

__all__ = ["serve"]

MAX_LOG_CHARS = 65536  # one log line, and the relay's pending text (the host caps again)


class _Backend:
    """sdk Backend over the bridge."""

    def __init__(self, server: WorkerServer) -> None:
        self._server = server
        self.call = server.call  # the hot path: no forwarding frame per capability call

    def register_hook(self, event: str, handler: Callable[..., Any], priority: int) -> None:
        self._server.handlers.append(handler)
        self._server.send(Register("hook", event, len(self._server.handlers) - 1, priority))

    def register_webhook(self, route: str, handler: Callable[..., Any]) -> None:
        if route not in self._server.routes:  # the host worked out which routes this plugin may have
            raise CapabilityError(f"register_webhook: route {route!r} is not one this plugin may register "
                                  "(it needs permission 'webhook:ingress' and the route in its manifest ingress)")
        self._server.webhooks[route] = handler
        self._server.send(Register("webhook", route))

    def register_search_provider(self, handler: Callable[..., Any]) -> None:
        if not self._server.may_search:
            raise CapabilityError("register_search_provider: plugin lacks permission 'search:provide'")
        self._server.search_provider = handler
        self._server.send(Register("search"))

    def log(self, level: str, message: str, fields: dict[str, Any]) -> None:
        try:
            check_plain(fields, "fields")
        except CapabilityError:
            fields = {k: repr(v) for k, v in fields.items()}
        self._server.send(Log(level, message[:MAX_LOG_CHARS], encoded(fields or None)))


class _Relay(io.TextIOBase):
    """sys.stdout / sys.stderr inside the worker: lines go to the host as logs (fds 1 and 2 are
    /dev/null, so nothing reaches the host's terminal directly)."""

    def __init__(self, server: WorkerServer, level: str) -> None:
        self._server = server
        self._level = level
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._pending += s
        if len(self._pending) > MAX_LOG_CHARS:
            self._pending = self._pending[-MAX_LOG_CHARS:]
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._server.send(Log(self._level, line[:MAX_LOG_CHARS]))
        return len(s)


class WorkerServer(asyncio.Protocol):
    """The worker end of the channel: answers host requests, dispatching on their type."""

    def __init__(self, layers: list[LayerResult], error: str | None, max_frame: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.writer: FrameWriter | None = None
        self.error = error
        self.reader = FrameReader(HostMsg, max_frame)
        self.max_frame = max_frame
        self.layers = layers
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)
        self.handlers: list[Callable[..., Any]] = []
        self.webhooks: dict[str, Callable[..., Any]] = {}
        self.search_provider: Callable[..., Any] | None = None
        self.routes: frozenset[str] = frozenset()
        self.may_search = False
        self.plugin: Plugin | None = None
        self.ctx: Context | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- transport --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.writer = FrameWriter(self.transport, asyncio.get_running_loop(), max_bytes=self.max_frame)
        self.send(Hello(PROTOCOL_VERSION, os.getpid(), self.layers, self.error))
        if self.error is not None:  # confinement failed: say why, run nothing
            self.writer.flush()
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, msg: Any) -> None:
        """Write `msg`; one over the frame cap is replaced by what its receiver should know instead
        (the host would end the channel on it, and the plugin would never learn why)."""
        if self.writer is None:
            return
        try:
            self.writer.write(msg)
        except FrameTooLarge as exc:
            if type(msg) is Result:
                self.writer.write(Result(msg.id, False, NIL, f"the result is {_over(exc)}"))
            else:  # a log line with huge fields: say so instead of it
                self.writer.write(Log("warning", f"a {type(msg).__name__.lower()} message was dropped: {_over(exc)}"))

    def data_received(self, data: bytes) -> None:
        if self.writer is None:
            return
        self.writer.cork()  # results of inline handlers leave in one write
        try:
            for msg in self.reader.feed(data):
                t = type(msg)
                if t is Hook:
                    self._hook(msg)
                elif t is Reply:
                    self._reply(msg)
                elif t is Ping:
                    self.send(Pong(msg.id))
                elif t is Shutdown:
                    self._shutdown()
                else:
                    self._spawn(self._serve(msg))
        finally:
            self.writer.uncork()

    def _reply(self, msg: Reply) -> None:
        fut = self.pending.pop(msg.id, None)
        if fut is None or fut.done():
            return
        if msg.ok:
            fut.set_result(msg.value)
        elif msg.error_kind == "timeout":
            fut.set_exception(CapabilityTimeout(msg.error or "capability call timed out"))
        else:
            fut.set_exception(CapabilityError(msg.error or "capability call failed"))

    def _shutdown(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        if self.transport is not None:
            self.transport.close()

    # -- capability calls --
    def call(self, verb: str, args: Any) -> asyncio.Future[Any]:
        """Send one capability call; the future of its reply is settled by `_reply` (every call
        gets a reply: the host answers errors and timeouts too) or by the channel closing."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        call_id = next(self.ids)
        if self.writer is not None:  # the caller waits on this frame: send it now, not at the iteration's end
            try:
                self.writer.write_now(Call(call_id, verb, encoded(args)))
            except FrameTooLarge as exc:  # refused here, before the host (which would end the channel) sees it
                fut.set_exception(CapabilityError(f"{verb}: the arguments are {_over(exc)}; send less per call"))
                return fut
        self.pending[call_id] = fut
        return fut

    # -- host requests --
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _hook(self, req: Hook) -> None:
        """Run one hook handler. A sync one is answered here, inside the read callback (no task);
        an async one (or a function returning an awaitable) runs as a task that awaits it
        directly, so each capability call it makes resumes as few frames as possible."""
        hid = req.handler_id
        if not 0 <= hid < len(self.handlers):
            self._finish(req.id, (False, None, f"hook request names no registered handler ({hid})"))
            return
        try:
            result = self.handlers[hid](HookContext(event=req.event, data=req.data, session_id=req.session_id,
                                                    timestamp=req.timestamp, source=req.source, config=req.config))
            if result is not None and inspect.isawaitable(result):
                self._spawn(self._serve_awaitable(req.id, result))
                return
        except Exception as exc:
            self._finish(req.id, (False, None, _describe(exc)))
            return
        if result is None:
            self.send(Result(req.id, True, NIL, None))  # plain continue
            return
        try:
            self._finish(req.id, (True, _hook_wire(result), None))
        except TypeError as exc:
            self._finish(req.id, (False, None, str(exc)))

    async def _serve_awaitable(self, req_id: int, awaitable: Any) -> None:
        try:
            outcome: tuple[bool, Any, str | None] = (True, _hook_wire(await awaitable), None)
        except Exception as exc:
            outcome = (False, None, _describe(exc))
        self._finish(req_id, outcome)

    def _finish(self, req_id: int, outcome: tuple[bool, Any, str | None]) -> None:
        ok, value, error = outcome
        if ok:
            try:
                check_plain(value, "result")
            except CapabilityError as exc:
                ok, value, error = False, None, str(exc)
        self.send(Result(req_id, ok, encoded(value) if ok else NIL, error))

    async def _serve(self, req: HostRequest) -> None:
        try:
            value = await self._dispatch(req)
            outcome: tuple[bool, Any, str | None] = (True, value, None)
        except Exception as exc:
            outcome = (False, None, _describe(exc))
        self._finish(req.id, outcome)

    async def _dispatch(self, req: HostRequest) -> Any:
        if type(req) is Load:
            return self._load(req)
        plugin, ctx = self._ready()
        if type(req) is Lifecycle:
            return await _maybe_await(getattr(plugin, req.method)(ctx))  # `method` is a Literal of four
        if type(req) is ConfigChange:
            set_config(ctx, req.config)
            return await _maybe_await(plugin.on_config_change(ctx, req.config))
        if type(req) is Health:
            return await _maybe_await(plugin.health_check())
        if type(req) is Webhook:
            handler = self.webhooks.get(req.route)
            if handler is None:
                raise LookupError(f"no webhook handler registered for route {req.route!r}")
            return await _maybe_await(handler(req.request))
        if type(req) is Search:
            if self.search_provider is None:
                raise LookupError("no search provider registered")
            return await _maybe_await(self.search_provider(req.query))
        raise ValueError(f"unexpected request {type(req).__name__}")  # Hook is served by _hook

    def _ready(self) -> tuple[Plugin, Context]:
        if self.plugin is None or self.ctx is None:
            raise RuntimeError("plugin not loaded")
        return self.plugin, self.ctx

    def _load(self, req: Load) -> None:
        self.routes = frozenset(req.webhook_routes)
        self.may_search = req.search_provider
        sys.path.insert(0, req.plugin_dir)
        module_name = "plugbox_plugin_" + req.plugin_id.replace("-", "_").replace(".", "_")
        module = _run_main(module_name, os.path.join(req.plugin_dir, req.main))
        classes = [
            v for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, Plugin) and v is not Plugin and v.__module__ == module.__name__
        ]
        if len(classes) != 1:
            raise TypeError(
                f"plugin main module must define exactly one Plugin subclass at module level; found {len(classes)}"
            )
        self.ctx = Context(req.plugin_id, req.config, _Backend(self))
        self.plugin = classes[0]()
        self.plugin.ctx = self.ctx


def _run_main(module_name: str, path: str) -> ModuleType:
    """Run the plugin's main file as module `module_name`, with the attributes an import gives it
    (__spec__, __file__, __loader__ None) and registered in sys.modules before it runs.

    By hand rather than through importlib's file loader: CPython writes the reference count of
    every object it runs, so each function of that loader a worker runs (spec lookup,
    bytecode-cache probes, its loader objects, pathlib) copies a page of the zygote's memory into
    the worker, and every worker runs them once (docs/performance.md). The plugin's own imports
    (its directory is first on sys.path) still go through importlib as usual."""
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec", dont_inherit=True)
    spec = importlib.machinery.ModuleSpec(module_name, None, origin=path)
    spec.has_location = True
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    exec(code, module.__dict__)
    return module


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _hook_wire(result: Any) -> dict[str, Any] | None:
    """A handler's answer as it goes on the wire: None (continue, data unchanged), or
    {continue, data, error}."""
    if result is None:
        return None
    if isinstance(result, HookResult):
        return {"continue": not result.stop, "data": result.data, "error": result.error}
    raise TypeError(f"hook handler returned {type(result).__name__}, expected HookResult or None")


def _over(exc: FrameTooLarge) -> str:
    return f"{exc.size} bytes encoded, over the bridge's frame cap of {exc.cap} bytes (frame_max_bytes)"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    if isinstance(exc, CapabilityError):
        return text
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    return (f"{name}: {text}" if text else name) + where


async def serve(channel: socket.socket, layers: list[LayerResult], error: str | None, max_frame: int) -> None:
    """Serve the host over `channel` until it closes."""
    loop = asyncio.get_running_loop()
    server = WorkerServer(layers, error, max_frame)
    sys.stdout = _Relay(server, "info")
    sys.stderr = _Relay(server, "error")
    await loop.connect_accepted_socket(lambda: server, sock=channel)
    await server.closed
