"""The host: wires settings, database, services, the hook bus, the capability router and the plugin
manager together, and owns their start and stop. Nothing here holds policy of its own."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plugbox import __version__
from plugbox.bridge.process import Zygote
from plugbox.capabilities.messages import MessageService
from plugbox.capabilities.router import CapabilityRouter, Services
from plugbox.capabilities.search import SearchService
from plugbox.engines.loopback import LoopbackEngine
from plugbox.hooks import HookBus
from plugbox.inprocess import InProcessRuntime
from plugbox.loader import PluginEntry, PluginManager
from plugbox.manifest import discover, load_manifest, parse_manifest
from plugbox.net.allowlist import effective_allowlist
from plugbox.net.fetch import FetchPolicy, FetchService
from plugbox.runtime import PluginRuntime, RuntimeDeps, RuntimeFactory
from plugbox.sdk import Plugin
from plugbox.settings import Settings, load_settings
from plugbox.storage.conversations import ConversationStore
from plugbox.storage.db import Database
from plugbox.storage.kv import PluginStorage
from plugbox.storage.registry import Registry

__all__ = ["Host", "HostObserver"]

log = logging.getLogger("plugbox.host")


def _sandbox_factory(plugin_dir: Path) -> RuntimeFactory:
    from plugbox.bridge.runtime import WorkerRuntime  # the host side of the sandbox tier

    def make(entry: PluginEntry, deps: RuntimeDeps) -> PluginRuntime:
        return WorkerRuntime(entry, deps, plugin_dir)

    return make


class HostObserver:
    """Told about host events worth counting; the default ignores them. The HTTP API's metrics
    (`plugbox.api.metrics.Metrics`) replace it through `host.observer`."""

    def capability_call(self, verb: str, outcome: str) -> None:
        pass

    def hook_timeout(self, plugin_id: str) -> None:
        pass

    def worker_failed(self, plugin_id: str, restarting: bool, reason: str) -> None:
        """A worker of `plugin_id` died or was killed and the manager acted on it: a restart
        follows unless the breaker opened."""

    def hook_chain(self, event: str, seconds: float) -> None:
        """One `bus.execute` of `event` took `seconds` (only timed once an observer is set)."""


class Host:
    """One plugbox host. Use as `async with Host(settings) as host:`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        engine: LoopbackEngine | None = None,
        sandbox_factory: Callable[[Path], RuntimeFactory] = _sandbox_factory,
        bundled: bool = True,
    ) -> None:
        self.settings = settings or load_settings()
        self.engine = engine or LoopbackEngine()
        self._sandbox_factory = sandbox_factory
        data = self.settings.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.db = Database(data / "plugbox.db")
        self.registry = Registry(self.db)
        self.storage = PluginStorage(self.db, self.settings.storage_quota_bytes)
        self.conversations = ConversationStore(self.db)
        self.manager = PluginManager(
            self.settings, self.registry, [self.storage.drop, self.conversations.delete_plugin], self._make_deps
        )
        self.bus = HookBus(
            budget=lambda _pid: self.settings.hook_budget_ms / 1000,
            scope=self._hook_scope,
            on_success=self.manager.record_success,
            on_timeout=self._hook_timed_out,
        )
        self.messages = MessageService(self.engine, self.bus)
        self.fetch = FetchService(self.settings, self._fetch_policy)
        self.router = CapabilityRouter(
            Services(
                engine=self.engine,
                messages=self.messages,
                storage=self.storage,
                net=self.fetch,
                conversations=self.conversations,
            ),
            timeout=self.settings.capability_timeout_ms / 1000,
            send_factor=self.settings.send_timeout_factor,
        )
        self.search = SearchService(self.manager, self.settings.capability_timeout_ms / 1000)
        self.zygote = Zygote()
        self.engine.on_inbound = self._inbound
        self.engine.on_session_event = self._session_event
        self._observer = HostObserver()
        self._started = False
        if bundled:
            from plugbox.builtins.auto_reply import MANIFEST, AutoReply

            self.register_builtin(AutoReply, MANIFEST)

    @property
    def observer(self) -> HostObserver:
        return self._observer

    @observer.setter
    def observer(self, observer: HostObserver) -> None:
        """Replace the observer; from then on every capability call is counted and every hook
        chain timed into it (until then nothing is counted or timed for nobody)."""
        self._observer = observer
        self.bus.on_chain = observer.hook_chain
        self.router.on_call = observer.capability_call

    def _make_deps(self) -> RuntimeDeps:
        return RuntimeDeps(settings=self.settings, bus=self.bus, router=self.router,
                           on_failure=self._runtime_failed, zygote=self.zygote)

    def _runtime_failed(self, entry: PluginEntry, reason: str, counted: bool = False) -> None:
        if self.manager.runtime_failed(entry, reason, counted=counted):  # not a disable or shutdown
            failures = entry.record.consecutive_failures
            self.observer.worker_failed(entry.plugin_id, failures < self.settings.breaker_threshold, reason)

    def _hook_timed_out(self, plugin_id: str) -> None:
        self.observer.hook_timeout(plugin_id)
        entry = self.manager.entries.get(plugin_id)
        if entry is None:
            return
        if entry.runtime is not None:
            entry.runtime.hook_timed_out()
        self.manager.runtime_timed_out(entry)

    def _hook_scope(self, plugin_id: str, session_id: str | None) -> dict[str, Any] | None:
        entry = self.manager.entries.get(plugin_id)
        return None if entry is None else entry.hook_config(session_id)

    def _fetch_policy(self, plugin_id: str) -> FetchPolicy:
        entry = self.manager.get(plugin_id)
        configs = [entry.record.config, *entry.record.session_config.values()]
        return FetchPolicy(allow=effective_allowlist(entry.manifest.net, configs), secrets=entry.secret_values())

    async def _inbound(self, session_id: str, message: dict[str, Any]) -> None:
        await self.messages.receive(session_id, message)

    async def _session_event(self, event: str, session_id: str, data: Any) -> None:
        await self.bus.execute(event, data, session_id, source="engine")

    # -- plugins --
    def builtin_ids(self) -> set[str]:
        return {e.plugin_id for e in self.manager.entries.values() if e.builtin}

    def register_builtin(self, factory: Callable[[], Plugin], manifest: dict[str, Any]) -> PluginEntry:
        """Register a trusted plugin that runs in the host process."""
        m = parse_manifest(manifest, host_version=__version__, builtin=True, reserved_ids=self.builtin_ids())

        def make(entry: PluginEntry, deps: RuntimeDeps) -> PluginRuntime:
            return InProcessRuntime(entry, deps, factory)

        return self.manager.add(m, make, source="builtin")

    def load_plugin(self, plugin_dir: Path) -> PluginEntry:
        """Validate and register an untrusted plugin directory; runs none of its code."""
        plugin_dir = plugin_dir.resolve()
        m = load_manifest(
            plugin_dir,
            host_version=__version__,
            reserved_ids=self.builtin_ids(),
            allow_unsigned_ingress=self.settings.allow_unsigned_ingress,
        )
        return self.manager.add(m, self._sandbox_factory(plugin_dir), source="disk", path=plugin_dir)

    def load_directory(self, plugins_dir: Path | None = None) -> dict[str, str | None]:
        """Load every plugin under the plugins directory; a bad one is reported, not fatal."""
        root = plugins_dir or self.settings.plugins_path
        results: dict[str, str | None] = {}
        if not root.is_dir():
            return results
        for path in discover(root):
            try:
                self.load_plugin(path)
                results[path.name] = None
            except Exception as exc:  # ManifestError and unreadable directories alike
                results[path.name] = str(exc)
                log.error("plugin directory %s not loaded: %s", path, exc)
        return results

    # -- start / stop --
    async def start(self, *, restore: bool = True) -> None:
        self._started = True
        if restore:
            await self.manager.restore()

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.manager.shutdown()
            await self.zygote.close()
        await self.db.close()

    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
