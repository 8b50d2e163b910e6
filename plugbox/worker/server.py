"""The worker's side of the bridge: loads the plugin's `main`, serves host requests (load,
lifecycle, hooks, config, health, webhooks, search) and turns `ctx.*` calls into bridge Calls.

Runs inside the confined process, after confinement, on its own event loop. It trusts nothing the
plugin returns: results are checked for plain data before they are encoded. Pings are answered
straight from the protocol callback, so a pong means the event loop itself is alive.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import inspect
import io
import itertools
import os
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from plugbox.bridge.wire import (
    PROTOCOL_VERSION,
    Call,
    FrameReader,
    FrameWriter,
    Hello,
    HostMsg,
    Log,
    Ping,
    Pong,
    Register,
    Reply,
    Request,
    Result,
    Shutdown,
)
from plugbox.errors import CapabilityError, CapabilityTimeout
from plugbox.sdk import Context, HookContext, HookResult, Plugin, check_plain

__all__ = ["serve"]

# The hook event the current task is handling: sent along with capability calls so the host can
# keep a handler from re-entering itself.
_origin: contextvars.ContextVar[str | None] = contextvars.ContextVar("plugbox_origin", default=None)



class _Backend:
    """sdk Backend over the bridge."""

    def __init__(self, server: WorkerServer) -> None:
        self._server = server
        self.call = server.call  # the hot path: no forwarding frame per capability call

    def register_hook(self, event: str, handler: Callable[..., Any], priority: int) -> None:
        self._server.handlers.append(handler)
        self._server.send(Register("hook", event, len(self._server.handlers) - 1, priority))

    def register_webhook(self, route: str, handler: Callable[..., Any]) -> None:
        self._server.require("webhook:ingress", "register_webhook")
        if route not in self._server.routes:
            raise CapabilityError(f"register_webhook: route {route!r} is not declared in the manifest ingress")
        self._server.webhooks[route] = handler
        self._server.send(Register("webhook", route))

    def register_search_provider(self, handler: Callable[..., Any]) -> None:
        self._server.require("search:provide", "register_search_provider")
        self._server.search_provider = handler
        self._server.send(Register("search"))

    def log(self, level: str, message: str, fields: dict[str, Any]) -> None:
        try:
            check_plain(fields, "fields")
        except CapabilityError:
            fields = {k: repr(v) for k, v in fields.items()}
        self._server.send(Log(level, message[:65536], fields or None))


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
        if len(self._pending) > 65536:
            self._pending = self._pending[-65536:]
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._server.send(Log(self._level, line[:65536]))
        return len(s)


class WorkerServer(asyncio.Protocol):
    def __init__(self, layers: list[dict[str, Any]], error: str | None = None, max_frame: int = 16 << 20) -> None:
        self.transport: asyncio.Transport | None = None
        self.writer: FrameWriter | None = None
        self.error = error
        self.reader = FrameReader(HostMsg, max_frame)
        self.layers = layers
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)
        self.handlers: list[Callable[..., Any]] = []
        self.webhooks: dict[str, Callable[..., Any]] = {}
        self.search_provider: Callable[..., Any] | None = None
        self.permissions: frozenset[str] = frozenset()
        self.routes: frozenset[str] = frozenset()
        self.plugin: Plugin | None = None
        self.ctx: Context | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- transport --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.writer = FrameWriter(self.transport, asyncio.get_running_loop())
        self.send(Hello(PROTOCOL_VERSION, os.getpid(), self.layers, self.error))
        if self.error is not None:  # confinement failed: say why, run nothing
            self.writer.flush()
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, msg: Any) -> None:
        if self.writer is not None:
            self.writer.write(msg)

    def data_received(self, data: bytes) -> None:
        if self.writer is None:
            return
        self.writer.cork()  # results of inline handlers leave in one write
        try:
            self._handle(self.reader.feed(data))
        finally:
            self.writer.uncork()

    def _handle(self, messages: list[Any]) -> None:
        for msg in messages:
            t = type(msg)
            if t is Reply:
                fut = self.pending.pop(msg.id, None)
                if fut is not None and not fut.done():
                    if msg.ok:
                        fut.set_result(msg.value)
                    elif msg.error_kind == "timeout":
                        fut.set_exception(CapabilityTimeout(msg.error or "capability call timed out"))
                    else:
                        fut.set_exception(CapabilityError(msg.error or "capability call failed"))
            elif t is Request:
                self._start(msg)
            elif t is Ping:
                self.send(Pong(msg.id))
            elif t is Shutdown and self.transport is not None:
                if self.writer is not None:
                    self.writer.flush()
                self.transport.close()

    # -- capability calls --
    def require(self, permission: str, what: str) -> None:
        if permission not in self.permissions:
            raise CapabilityError(f"plugin lacks permission {permission!r} required by {what}")

    def call(self, verb: str, args: Any) -> asyncio.Future[Any]:
        """Send one capability call; the future of its reply is settled by `_handle` (every call
        gets a reply: the host answers errors and timeouts too) or by the channel closing."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        call_id = next(self.ids)
        if self.writer is not None:  # the caller waits on this frame: send it now, not at the iteration's end
            self.writer.write_now(Call(call_id, verb, args, _origin.get()))
        self.pending[call_id] = fut
        return fut

    # -- host requests --
    def _start(self, req: Request) -> None:
        if req.op == "hook":
            handler = self._handler(req.args)
            if handler is not None:
                self._hook(req, handler)
                return
        self._spawn(self._serve(req))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _handler(self, args: Any) -> Callable[..., Any] | None:
        hid = args[0] if isinstance(args, list) and len(args) == 7 else None
        return self.handlers[hid] if type(hid) is int and 0 <= hid < len(self.handlers) else None

    def _hook(self, req: Request, handler: Callable[..., Any]) -> None:
        """Run one hook handler. A sync one is answered here, inside the read callback (no task);
        an async one (or a function returning an awaitable) runs as a task that awaits it
        directly, so each capability call it makes resumes as few frames as possible. The task
        is created while the handler's event is set as the call origin, so it keeps it."""
        token = _origin.set(req.args[1])
        try:
            result = handler(_hook_context(req.args))
            if result is not None and inspect.isawaitable(result):
                self._spawn(self._serve_awaitable(req.id, result))  # the task copies the context now
                return
        except Exception as exc:
            self._finish(req.id, (False, None, _describe(exc)))
            return
        finally:
            _origin.reset(token)
        if result is None:
            self.send(Result(req.id, True, None, None))  # plain continue
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
        self.send(Result(req_id, ok, value if ok else None, error))

    async def _serve(self, req: Request) -> None:
        try:
            value = await self._dispatch(req.op, req.args)
            outcome: tuple[bool, Any, str | None] = (True, value, None)
        except Exception as exc:
            outcome = (False, None, _describe(exc))
        self._finish(req.id, outcome)

    async def _dispatch(self, op: str, args: Any) -> Any:
        if op == "load":
            return self._load(args)
        plugin, ctx = self._ready()
        if op == "lifecycle":
            if args not in ("on_load", "on_enable", "on_disable", "on_unload"):
                raise ValueError(f"unknown lifecycle method {args!r}")
            return await _maybe_await(getattr(plugin, args)(ctx))
        if op == "hook":
            raise LookupError("hook request names no registered handler")  # found ones go to _hook
        if op == "config":
            ctx._replace_config(args)
            return await _maybe_await(plugin.on_config_change(ctx, args))
        if op == "health":
            return await _maybe_await(plugin.health_check())
        if op == "webhook":
            handler = self.webhooks.get(args["route"])
            if handler is None:
                raise LookupError(f"no webhook handler registered for route {args['route']!r}")
            return await _maybe_await(handler(args["request"]))
        if op == "search":
            if self.search_provider is None:
                raise LookupError("no search provider registered")
            return await _maybe_await(self.search_provider(args))
        raise ValueError(f"unknown request {op!r}")

    def _ready(self) -> tuple[Plugin, Context]:
        if self.plugin is None or self.ctx is None:
            raise RuntimeError("plugin not loaded")
        return self.plugin, self.ctx

    def _load(self, args: dict[str, Any]) -> Any:
        plugin_dir = Path(args["plugin_dir"])
        self.permissions = frozenset(args.get("permissions", ()))
        self.routes = frozenset(args.get("routes", ()))
        sys.path.insert(0, str(plugin_dir))
        main = plugin_dir / args["main"]
        module_name = "plugbox_plugin_" + args["plugin_id"].replace("-", "_").replace(".", "_")
        spec = importlib.util.spec_from_file_location(module_name, main)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load plugin main {args['main']!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        classes = [
            v for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, Plugin) and v is not Plugin and v.__module__ == module.__name__
        ]
        if len(classes) != 1:
            raise TypeError(
                f"plugin main module must define exactly one Plugin subclass at module level; found {len(classes)}"
            )
        self.ctx = Context(args["plugin_id"], args.get("config") or {}, _Backend(self))
        self.plugin = classes[0]()
        self.plugin.ctx = self.ctx
        return None


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _hook_context(args: list[Any]) -> HookContext:
    _hid, event, data, session_id, timestamp, source, config = args
    return HookContext(event=event, data=data, session_id=session_id, timestamp=timestamp,
                       source=source, config=config or {})


def _hook_wire(result: Any) -> dict[str, Any] | None:
    """A handler's answer as it goes on the wire: None (continue, data unchanged), or
    {continue, data, error}."""
    if result is None:
        return None
    if isinstance(result, HookResult):
        return {"continue": not result.stop, "data": result.data, "error": result.error}
    raise TypeError(f"hook handler returned {type(result).__name__}, expected HookResult or None")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    if isinstance(exc, CapabilityError):
        return text
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return (f"{name}: {text}" if text else name) + where


async def serve(
    channel: socket.socket, layers: list[dict[str, Any]], error: str | None = None, max_frame: int = 16 << 20
) -> None:
    """Serve the host over `channel` until it closes."""
    loop = asyncio.get_running_loop()
    server = WorkerServer(layers, error, max_frame)
    sys.stdout = _Relay(server, "info")
    sys.stderr = _Relay(server, "error")
    await loop.connect_accepted_socket(lambda: server, sock=channel)
    await server.closed
