"""The host side of the sandbox tier: one `WorkerRuntime` per enabled untrusted plugin.

It puts the pieces of a worker together and implements the lifecycle seam (plugbox.runtime's
PluginRuntime) over them, go-plugin style: the process runner (process.py: spawn from the zygote,
wait, kill through a pidfd), the channel (channel.py: frames, requests and their answers), what
the worker asks of the host (serving.py: capability calls, registrations), liveness after a hook
timeout (liveness.py) and the CPU watchdog (cpuwatch.py). It owns every task it starts and ends
them in `stop()`.

When the worker dies (crash, kill, OOM, closed channel), every in-flight request has already been
rejected by the channel with WorkerGone: hooks then resolve to `continue`, health to unhealthy,
lifecycle calls fail; the manager is told, so it can restart with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from plugbox.bridge.channel import Channel, ChannelLimits, ChannelStats
from plugbox.bridge.cpuwatch import CpuWatch
from plugbox.bridge.liveness import Liveness, loop_thread_runnable
from plugbox.bridge.process import WorkerProcess, spawn_limits
from plugbox.bridge.serving import CapabilityServer, Registrations
from plugbox.bridge.values import log_fields
from plugbox.errors import BridgeError, ConfinementError, PluginStateError
from plugbox.protocol import (
    PROTOCOL_VERSION,
    Call,
    ConfigChange,
    Health,
    Hook,
    LayerResult,
    Lifecycle,
    LifecycleMethod,
    Load,
    Log,
    Register,
    Search,
    Shutdown,
    Webhook,
)

if TYPE_CHECKING:
    from plugbox.hooks import Handler
    from plugbox.runtime import PluginHandle, RuntimeDeps
    from plugbox.sdk import HookContext, HookResult
    from plugbox.settings import Settings

__all__ = ["WorkerRuntime", "channel_limits", "missing_layers"]

log = logging.getLogger("plugbox.bridge")

GRACEFUL_EXIT_S = 1.0  # after Shutdown, before SIGKILL; and again for the kill to be reaped


def channel_limits(s: Settings) -> ChannelLimits:
    """What each worker's channel may make the host spend, from the host's settings."""
    drain_ms = s.channel_drain_timeout_ms if s.channel_drain_timeout_ms is not None else s.liveness_window_ms
    return ChannelLimits(high_water=s.channel_high_water_bytes, drain_timeout=drain_ms / 1000,
                         cpu_share=s.channel_cpu_percent / 100, cpu_burst=s.channel_cpu_burst_ms / 1000,
                         value_max_bytes=s.plain_decode_max_bytes, held_max=s.channel_held_max_bytes)


def missing_layers(layers: list[dict[str, Any]] | None) -> list[str]:
    """Names of the confinement layers a worker needed but did not apply (not the opt-in ones it
    was not asked for)."""
    return [str(layer.get("name")) for layer in layers or [] if not layer.get("applied") and not layer.get("skipped")]


class WorkerRuntime:
    def __init__(self, entry: PluginHandle, deps: RuntimeDeps, plugin_dir: Path) -> None:
        self.entry = entry
        self.deps = deps
        self.plugin_dir = plugin_dir
        s = deps.settings
        self.scratch = s.data_path / "scratch" / entry.plugin_id
        self.proc: WorkerProcess | None = None
        self.confinement: list[dict[str, Any]] | None = None
        self._channel = Channel(self, s.frame_max_bytes, entry.plugin_id, channel_limits(s),
                                cpu_total=deps.channel_cpu, host_bytes=deps.channel_bytes)
        self._calls = CapabilityServer(entry, deps.router, deps.bus, self._channel, s.max_calls_in_flight)
        self._registrations = Registrations(entry, deps.bus, self._hook_handler)
        self._liveness = Liveness(self._channel.ping, self._loop_thread_runnable, s.liveness_window_ms / 1000,
                                  self._runaway)
        self._cpu_watch: CpuWatch | None = None
        self._death_task: asyncio.Task[None] | None = None
        self._death_counted = False  # the kill ends a hook timeout the manager already counted
        self._stopping = False
        self._stopped = False

    # -- views --
    @property
    def pid(self) -> int | None:
        """The worker's pid while one runs (the lifecycle's views and metrics read it)."""
        return self.proc.pid if self.proc is not None else None

    @property
    def channel(self) -> Channel:
        """The worker's channel: its asyncio protocol, requests and read-only `stats()`."""
        return self._channel

    @property
    def has_search(self) -> bool:
        return self._registrations.has_search

    def has_webhook(self, route: str) -> bool:
        return self._registrations.has_webhook(route)

    @property
    def liveness_checking(self) -> bool:
        """A liveness check (after a hook timeout) is under way."""
        return self._liveness.checking

    @property
    def calls_in_flight(self) -> int:
        return self._calls.in_flight

    @property
    def refused_calls(self) -> int:
        return self._calls.refused

    def channel_stats(self) -> ChannelStats:
        return self._channel.stats()

    # -- Peer: what the channel hands on --
    def on_call(self, msg: Call) -> None:
        self._calls.serve(msg)

    def on_register(self, msg: Register) -> None:
        self._registrations.on_register(msg)

    def on_log(self, msg: Log) -> None:
        self.entry.logs.emit(msg.level, msg.message, log_fields(msg, self.deps.settings.log_fields_max_bytes))

    def on_lost(self, reason: str) -> None:
        if self.proc is not None:
            self.proc.kill()  # a worker that closed its channel is done, whatever it intends
        self._end_watchers()
        self._calls.cancel_all()
        if not self._stopping and self._death_task is None:
            self._death_task = asyncio.get_running_loop().create_task(self._report_death(reason))

    def _hook_handler(self, handler_id: int) -> Handler:
        channel = self._channel

        def handler(ctx: HookContext) -> asyncio.Future[HookResult | None]:
            return channel.hook(Hook(channel.new_id(), handler_id, ctx.event, ctx.data, ctx.session_id,
                                     ctx.timestamp, ctx.source, ctx.config))

        return handler

    # -- liveness and death --
    def hook_timed_out(self) -> None:
        """A hook ran past its budget: forget the abandoned request and check the worker's loop."""
        self._channel.forget_abandoned()
        if self.proc is not None and not self._stopping:
            self._liveness.check()

    def _loop_thread_runnable(self) -> float | None:
        return loop_thread_runnable(self.proc.pid) if self.proc is not None else None

    def _runaway(self, reason: str) -> None:
        self._death_counted = self._channel.stats().gone is None
        self._kill(reason)

    def _kill(self, reason: str) -> None:
        self._channel.abort(reason)
        if self.proc is not None:
            self.proc.kill()

    def _end_watchers(self) -> None:
        self._liveness.stop()
        if self._cpu_watch is not None:
            self._cpu_watch.stop()

    async def _report_death(self, reason: str) -> None:
        ending = await self.proc.wait(GRACEFUL_EXIT_S) if self.proc is not None else None
        if ending is not None and ending.status >= 0:
            reason = f"{reason} ({ending.describe()})"
        if not self._stopping:
            self.deps.on_failure(self.entry, reason, self._death_counted, oom=ending is not None and ending.oom)

    # -- PluginRuntime --
    async def start(self) -> None:
        s = self.deps.settings
        await self._clear_scratch()
        self.scratch.mkdir(parents=True, mode=0o700)
        self.proc = await self.deps.zygote.spawn(self.entry.plugin_id, str(self.plugin_dir),
                                                 str(self.scratch.resolve()), spawn_limits(s))
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: self._channel, sock=self.proc.channel)
        hello = await self._channel.hello
        self.confinement = [msgspec.to_builtins(layer) for layer in hello.layers]
        if hello.error is not None:
            failed = next((layer for layer in hello.layers if not layer.applied), LayerResult("?", False, hello.error))
            raise ConfinementError(failed.name, failed.detail or hello.error)
        if hello.version != PROTOCOL_VERSION:
            raise BridgeError(f"worker speaks protocol {hello.version}, host {PROTOCOL_VERSION}")
        if s.worker_cpu_limit_percent:
            self._cpu_watch = CpuWatch(self.proc.pid, s.worker_cpu_limit_percent / 100,
                                       s.worker_cpu_window_ms / 1000, self._kill)
            self._cpu_watch.start()
        missing = missing_layers(self.confinement)
        if missing:  # only possible in the operator's degraded mode: say so, loudly, every start
            warning = f"DEGRADED confinement: running without {', '.join(missing)}"
            log.warning("plugin %s: %s", self.entry.plugin_id, warning)
            self.entry.logs.emit("warning", warning)
        m = self.entry.manifest
        await self._channel.request(Load(self._channel.new_id(), m.id, str(self.plugin_dir), m.main,
                                         dict(self.entry.config), self.entry.webhook_routes(),
                                         "search:provide" in self.entry.permissions))

    async def lifecycle(self, method: str) -> None:
        if method not in ("on_load", "on_enable", "on_disable", "on_unload"):
            raise BridgeError(f"unknown lifecycle method {method!r}")
        lifecycle_method: LifecycleMethod = method  # type: ignore[assignment]  # (checked just above)
        await self._channel.request(Lifecycle(self._channel.new_id(), lifecycle_method))

    async def config_changed(self, config: dict[str, Any]) -> None:
        await self._channel.request(ConfigChange(self._channel.new_id(), config))

    async def health(self) -> dict[str, Any]:
        result = await self._channel.request(Health(self._channel.new_id()))
        return result if isinstance(result, dict) else {"healthy": bool(result), "message": ""}

    async def webhook(self, route: str, request: dict[str, Any]) -> dict[str, Any]:
        if not self._registrations.has_webhook(route):
            return {"status": 404, "body": {"error": f"no webhook handler for route {route!r}"}}
        result = await self._channel.request(Webhook(self._channel.new_id(), route, request))
        return result if isinstance(result, dict) else {"status": 200, "body": result}

    async def search(self, query: dict[str, Any]) -> Any:
        if not self._registrations.has_search:
            raise PluginStateError(f"plugin {self.entry.plugin_id!r} registered no search provider")
        return await self._channel.request(Search(self._channel.new_id(), query))

    async def stop(self) -> None:
        """Graceful close, bounded wait, kill; every task this runtime started ends. Idempotent."""
        if self._stopped:
            return
        self._stopped = self._stopping = True
        self._end_watchers()
        if self._death_task is not None:
            self._death_task.cancel()
        proc = self.proc
        if proc is not None:
            self._channel.send(Shutdown())
            self._channel.flush()
            if await proc.wait(GRACEFUL_EXIT_S) is None:
                proc.kill()
                await proc.wait(GRACEFUL_EXIT_S)
        self._channel.abort("stopped")
        self._calls.cancel_all()
        if proc is not None:
            proc.close()
        await self._clear_scratch()

    async def _clear_scratch(self) -> None:
        """Remove what a worker left in scratch, off the event loop: without the scratch tmpfs it is
        a directory on the host's disk, where the worker may have made any number of files (100,000
        took the loop about 1 s to unlink); the wait is then this plugin's (its stop or start) alone."""
        await asyncio.to_thread(shutil.rmtree, self.scratch, ignore_errors=True)
