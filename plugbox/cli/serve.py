"""`plugbox serve`: the host (SQLite + the engine `settings.engine` names, loopback by default)
behind the HTTP API, under uvicorn.

Boot, inside the app's lifespan: load the plugins directory, start the host (re-enabling what the
operator had enabled), and with the loopback engine create the session `default` when there is
none, so message injection works out of the box (the Cloud API engine has one session per phone
number id, started by the host). Shutdown (SIGINT or SIGTERM): uvicorn stops accepting, the lifespan
runs `host.stop()` (every `on_disable` under the shared cap, workers stopped, zygote closed), and the
process exits 0. uvicorn re-raises a captured signal after a graceful shutdown; we do not want that
(the exit would be by signal, not 0), so `_Server` keeps uvicorn's handlers without the re-raise.

With no API key configured, an admin key is generated, written once to stderr, and never logged
again: uvicorn's access log records paths, not headers, and the key lives only in the app's KeyRing
(as a digest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Generator
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from plugbox.api import create_app
from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.settings import Settings

__all__ = ["DEFAULT_SESSION", "serve"]

DEFAULT_SESSION = "default"
log = logging.getLogger("plugbox.serve")


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], object]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn waits for open responses before the lifespan's shutdown: the live event streams
        # must end first, or an open dashboard would hold the server up.
        super().handle_exit(sig, frame)
        self._on_exit()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


async def _boot(host: Host) -> None:
    for name, error in host.load_directory().items():
        if error is not None:
            log.error("plugin %s not loaded: %s", name, error)
    await host.start()
    if isinstance(host.engine, LoopbackEngine) and not host.engine.sessions():
        for session_id in host.settings.loopback_sessions or (DEFAULT_SESSION,):
            await host.engine.create_session(session_id)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: this machine answers on loopback
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def serve(settings: Settings, *, stderr: Any = None) -> int:
    err = stderr or sys.stderr
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    generated: tuple[str, ...] = ()
    if not settings.api_keys and not settings.admin_api_keys:
        key = secrets.token_urlsafe(32)
        generated = (key,)
        err.write(f"plugbox: no API key configured; generated admin key (shown once): {key}\n")
        err.flush()
    host = Host(settings)
    if settings.engine == "cloudapi":
        from plugbox.api.routes.cloudapi import RedactVerifyToken

        logging.getLogger("uvicorn.access").addFilter(RedactVerifyToken())

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await _boot(host)
        base = f"http://{_url_host(settings.host)}:{settings.port}"
        err.write(f"plugbox: dashboard at {base}/dashboard ; API reference at {base}/docs\n")
        err.flush()
        try:
            yield
        finally:
            await host.stop()

    app = create_app(host, extra_admin_keys=generated, lifespan=lifespan)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="on", log_level="info",
                            server_header=False, proxy_headers=False)
    loop = asyncio.get_running_loop()
    # Called from a signal handler: the feed is touched from the loop, not from inside the handler.
    server = _Server(config, on_exit=lambda: loop.call_soon_threadsafe(host.feed.close))
    try:
        await server.serve()
    finally:
        await host.stop()  # idempotent; covers a failed startup
    return 0 if server.started else 1
