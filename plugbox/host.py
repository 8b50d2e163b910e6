"""The host: wires settings, database, services, the hook bus, the capability router and the plugin
manager together, owns their start and stop, and is the one public face of the lifecycle.

Adapters (`plugbox.api`, `plugbox.cli`, `plugbox.testing`, `plugbox dev run`) use only the methods
below and read plugins as `PluginView` snapshots; none of them reaches into the manager, an entry
or a runtime. Nothing here holds policy of its own: budgets and rules live in the lifecycle.
(Past 400 lines: the wiring of every service and the small public face stay in one module, so the
order things start and stop in reads top to bottom in one place; each method is a few lines.)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import IO, Any

from plugbox import __version__
from plugbox.bridge.process import Zygote
from plugbox.capabilities.messages import MessageService, SendLimits
from plugbox.capabilities.router import CapabilityRouter, Services
from plugbox.capabilities.search import Provider, SearchService
from plugbox.engines.base import Engine, EngineLifecycle
from plugbox.engines.loopback import LoopbackEngine
from plugbox.errors import EngineError
from plugbox.fdlimit import raise_open_files
from plugbox.feed import LiveFeed
from plugbox.handover import BOT_PERMISSIONS, HandoverGate
from plugbox.hooks import HookBus, HookLimits, HookOutcome
from plugbox.ingress import IngressQueue
from plugbox.ingress.instances import TOPIC as INSTANCES_TOPIC
from plugbox.ingress.instances import InstanceStore
from plugbox.inprocess import InProcessRuntime
from plugbox.lifecycle import ingress
from plugbox.lifecycle.catalog import catalog_archive, catalog_entries
from plugbox.lifecycle.clock import Clock
from plugbox.lifecycle.cluster import Cluster
from plugbox.lifecycle.entry import PluginEntry
from plugbox.lifecycle.hosts import HostReport, host_id, plugin_hosts
from plugbox.lifecycle.install import PluginInstaller, fetch_archive
from plugbox.lifecycle.manager import PluginManager
from plugbox.lifecycle.packages import PackageStore
from plugbox.lifecycle.registry import Registry
from plugbox.lifecycle.view import PluginView
from plugbox.logrelay import sanitise
from plugbox.manifest import discover, load_manifest, parse_manifest
from plugbox.net.allowlist import effective_allowlist
from plugbox.net.fetch import FetchPolicy, FetchService
from plugbox.observer import HostObserver, Observers
from plugbox.runtime import PluginHandle, PluginRuntime, RuntimeDeps, RuntimeFactory
from plugbox.sdk import Plugin
from plugbox.settings import Settings, load_settings
from plugbox.storage.conversations import TOPIC as HANDOVER_TOPIC
from plugbox.storage.conversations import ConversationStore
from plugbox.storage.db import RESYNC, Change
from plugbox.storage.kv import PluginStorage
from plugbox.storage.opening import open_database
from plugbox.storage.quota import Quota, WriteBudget
from plugbox.totals.held import HeldTotal
from plugbox.totals.rate import RateTotal
from plugbox.totals.sweep import Sweep
from plugbox.webhooks import Sender, WebhookService
from plugbox.webhooks.store import TOPIC as WEBHOOKS_TOPIC

__all__ = ["Host", "HostObserver", "engine_from_settings"]

log = logging.getLogger("plugbox.host")

# Set by `Host.inject_inbound` while the engine delivers its message: the chain's outcome is kept
# there, so that call can wait for the observers of that one event and no other.
_inbound_outcomes: contextvars.ContextVar[list[HookOutcome] | None] = contextvars.ContextVar(
    "plugbox_inbound_outcomes", default=None)


def engine_from_settings(settings: Settings) -> Engine:
    """The engine `settings.engine` names: the loopback engine (default) or the Cloud API engine."""
    if settings.engine == "cloudapi":
        from plugbox.engines.cloudapi import CloudApiEngine

        return CloudApiEngine.from_settings(settings)
    return LoopbackEngine.from_settings(settings)


def _sandbox_factory(plugin_dir: Path) -> RuntimeFactory:
    from plugbox.bridge.client import WorkerRuntime  # the host side of the sandbox tier

    def make(plugin: PluginHandle, deps: RuntimeDeps) -> PluginRuntime:
        return WorkerRuntime(plugin, deps, plugin_dir)

    return make


class Host:
    """One plugbox host. Use as `async with Host(settings) as host:`.

    Public surface: `register_builtin`, `load_plugin`, `load_directory`, `broken_directories`, `install`,
    `install_from_url`, `catalog`, `install_from_catalog`, `enable`,
    `disable`, `uninstall`, `set_config`, `set_session_config`, `set_active_sessions`, `plugins`,
    `plugin`, `plugin_hosts`, `health`, `inject_inbound`, `dispatch`, `ingress_route`, `session_gone`,
    `dispatch_ingress`, `search`,
    `add_observer`, `start`, `stop`; and the services `settings`, `engine` (`loopback` when it is the
    simulator), `bus`, `storage`, `conversations`, `handover` (the gate that keeps a chat handed to a
    human from the bots), `webhooks` (outbound webhooks: told every hook chain's outcome through
    `bus.on_outcome`), `ingress` (the queue of async ingress deliveries), `ingress_instances` (the
    ingress instances the operator created, each with its own secrets), `feed` (log lines and failures
    as they happen, for live views), `channel_bytes` (the host-wide books of the bytes worker
    channels keep for their workers, plugbox.totals.held), `host_id` (this host's name among
    hosts sharing the database).
    `manager` is the lifecycle's internals, kept reachable for white-box
    tests only."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        engine: Engine | None = None,
        sandbox_factory: Callable[[Path], RuntimeFactory] = _sandbox_factory,
        bundled: bool = True,
        observers: Collection[HostObserver] = (),
        clock: Clock | None = None,
        webhook_sender: Sender | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.engine: Engine = engine or engine_from_settings(self.settings)
        self._sandbox_factory = sandbox_factory
        data = self.settings.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.host_id = host_id(self.settings)  # names this host's own plugin status rows
        self.db = open_database(self.settings, host_id=self.host_id)
        self.registry = Registry(self.db, self.host_id)
        # Host CPU all workers' channels may take together (each channel also has its own share).
        self.channel_cpu = RateTotal(self.settings.channel_cpu_total_percent / 100,
                                     self.settings.channel_cpu_total_burst_ms / 1000)
        write_budget = WriteBudget.from_settings(self.settings)  # one bucket per plugin, all its stores
        quota = Quota(self.settings.storage_quota_bytes, self.settings.storage_total_bytes)  # one per host
        self.storage = PluginStorage(
            self.db,
            self.settings.storage_quota_bytes,
            cache_entries=self.settings.storage_cache_entries,
            cache_value_max_bytes=self.settings.storage_cache_value_max_bytes,
            write_budget=write_budget,
            list_max_keys=self.settings.storage_list_max_keys,
            check_max_bytes=self.settings.plain_decode_max_bytes,
            quota=quota,
        )
        self.conversations = ConversationStore(
            self.db,
            messages_per_plugin=self.settings.conversation_messages_per_plugin,
            rows_per_plugin=self.settings.conversation_rows_per_plugin,
            human_chats_per_plugin=self.settings.handover_human_chats_per_plugin,
            human_chats_total=self.settings.handover_human_chats_total,
            write_budget=write_budget,
            quota=quota,
        )
        self._observers = Observers()
        self.feed = LiveFeed(self.settings.live_feed_queue_max)
        self._observers.add(self.feed)
        self._broken: dict[str, str] = {}  # plugins-dir entry name -> why it did not load
        self.manager = PluginManager(
            self.settings, self.registry,
            [self.storage.drop, self.conversations.delete_plugin, lambda pid: self.ingress.drop_plugin(pid),
             lambda pid: self.ingress_instances.drop_plugin(pid)],
            self._make_deps,
            clock=clock, on_worker_failed=self._observers.worker_failed,
            on_plugin_failure=self._observers.plugin_failure, on_log_line=self.feed.log_line,
        )
        self.bus = HookBus(
            budget=lambda _pid: self.settings.hook_budget_ms / 1000,
            scope=self.manager.hook_config,
            on_success=self.manager.record_success,
            on_error=self.manager.handler_failed,
            on_timeout=self._hook_timed_out,
            relay=self.manager.plugin_says,
            may_modify=self.manager.may_modify,
            on_dropped=self._observers.hook_dropped,
            limits=HookLimits.of(self.settings),
        )
        self.handover = HandoverGate(self.conversations, lambda: self.manager.holding(BOT_PERMISSIONS),
                                     lambda pid: self.manager.running(pid) is not None)
        self.messages = MessageService(self.engine, self.bus, gate=self.handover.skipped,
                                       limits=SendLimits.from_settings(self.settings))
        self.webhooks = WebhookService(self.db, self.settings, self.bus, sender=webhook_sender, clock=clock,
                                       on_dropped=self._observers.webhook_dropped, write_budget=write_budget)
        self.ingress_instances = InstanceStore(self.db, per_plugin=self.settings.ingress_instances_per_plugin)
        self.ingress = IngressQueue(self.db, self.settings, dispatch=self._dispatch_queued,
                                    running=self.manager.running_ids, clock=clock)
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
            on_denied=self.manager.capability_denied,
        )
        self.search = SearchService(self._search_providers, self.manager.__contains__,
                                    self.settings.capability_timeout_ms / 1000, on_timeout=self._hook_timed_out)
        self.zygote = Zygote(env_allow=self.settings.worker_env_allow)
        # what all workers' channels keep, shared fairly (plugbox.totals.held), their queues measured by
        # one sweep for all of them (plugbox.totals.sweep)
        self.channel_bytes = HeldTotal(self.settings.channel_bytes_total, "channel_bytes_total")
        self._channel_sweep = Sweep(self.channel_bytes.measure, self.settings.channel_bytes_sweep_ms / 1000)
        # A shared database (PostgreSQL) holds the packages, so any host can run any plugin, and a
        # Cluster keeps this host in step with the others and owns its session leases.
        self.packages = PackageStore(self.db) if self.db.shared else None
        self._installer = PluginInstaller(self.manager, self._load, self.packages)
        self.cluster = None if self.packages is None else Cluster(
            self.db, self.manager, self.registry, self.packages, self._installer,
            lambda: [s["id"] for s in self.engine.sessions()],
            lease_interval_s=self.settings.cluster_lease_interval_ms / 1000, on_change=self._changed_elsewhere,
        )
        self.engine.on_inbound = self._inbound
        self.engine.on_session_event = self._session_event
        self._started = False
        self._restoring: asyncio.Future[None] | None = None  # the boot's re-enables, while they run
        for observer in observers:
            self.add_observer(observer)
        if bundled:
            from plugbox.builtins.auto_reply import MANIFEST, AutoReply

            self.register_builtin(AutoReply, MANIFEST)

    @property
    def loopback(self) -> LoopbackEngine:
        """The engine as the loopback simulator (injection, the sent log, session fixtures);
        EngineError when the host runs another engine."""
        if not isinstance(self.engine, LoopbackEngine):
            raise EngineError(f"this needs the loopback engine; the host runs {self.settings.engine!r}")
        return self.engine

    # -- observers --
    def add_observer(self, observer: HostObserver) -> None:
        """Tell `observer` about host events from now on: every capability call is counted and every
        hook chain timed into it (until the first observer is added, nothing is counted or timed)."""
        self._observers.add(observer)
        self.bus.on_chain = self._observers.hook_chain_sink()
        self.router.on_call = self._observers.capability_call_sink()

    # -- wiring --
    def _make_deps(self) -> RuntimeDeps:
        return RuntimeDeps(settings=self.settings, bus=self.bus, router=self.router,
                           on_failure=self.manager.runtime_failed, zygote=self.zygote,
                           channel_cpu=self.channel_cpu, channel_bytes=self.channel_bytes)

    def _hook_timed_out(self, plugin_id: str) -> None:
        self._observers.hook_timeout(plugin_id)
        self.manager.hook_timed_out(plugin_id)

    def _fetch_policy(self, plugin_id: str) -> FetchPolicy:
        entry = self.manager.get(plugin_id)
        configs = [entry.record.config, *entry.record.session_config.values()]
        return FetchPolicy(allow=effective_allowlist(entry.manifest.net, configs), secrets=entry.secret_values())

    def _search_providers(self) -> dict[str, Provider]:
        out: dict[str, Provider] = {}
        for pid in self.manager.running_ids():
            running = self.manager.running(pid)
            if running is not None and running[1].has_search:
                entry, runtime = running
                out[pid] = Provider(pid, runtime.search, entry.secret_values)
        return out

    def _changed_elsewhere(self, change: Change) -> None:
        """What another host changed that the host itself keeps (plugins are the cluster's own)."""
        if change.topic in (WEBHOOKS_TOPIC, RESYNC):
            self.webhooks.follow()
        if change.topic == HANDOVER_TOPIC:
            self.conversations.changed_elsewhere(change.subject)
        elif change.topic == INSTANCES_TOPIC:
            self.ingress_instances.follow(change.subject)
        elif change.topic == RESYNC:
            self.conversations.follow()
            self.ingress_instances.follow(None)

    async def _inbound(self, session_id: str, message: dict[str, Any]) -> None:
        if self.cluster is not None and not self.cluster.owns(session_id):
            return  # the session's lease holder runs its hooks; each message is handled once
        outcome = await self.messages.receive(session_id, message)
        waiting = _inbound_outcomes.get()
        if waiting is not None:
            waiting.append(outcome)

    async def _session_event(self, event: str, session_id: str, data: Any) -> None:
        if self.cluster is not None and not self.cluster.owns(session_id):
            return
        await self.bus.execute(event, data, session_id, source="engine")

    # -- registration (runs no plugin code) --
    def builtin_ids(self) -> set[str]:
        return self.manager.builtin_ids()

    def register_builtin(self, factory: Callable[[], Plugin], manifest: dict[str, Any]) -> PluginView:
        """Register a trusted plugin that runs in the host process."""
        m = parse_manifest(manifest, host_version=__version__, builtin=True, reserved_ids=self.builtin_ids())

        def make(plugin: PluginHandle, deps: RuntimeDeps) -> PluginRuntime:
            return InProcessRuntime(plugin, deps, factory)

        return PluginView.of(self.manager.add(m, make, source="builtin"))

    def load_plugin(self, plugin_dir: Path) -> PluginView:
        """Validate and register an untrusted plugin directory; runs none of its code."""
        return PluginView.of(self._load(plugin_dir))

    def _load(self, plugin_dir: Path) -> PluginEntry:
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
                self._broken.pop(path.name, None)
            except Exception as exc:  # ManifestError and unreadable directories alike
                results[path.name] = self._broken[path.name] = sanitise(
                    str(exc), (), self.settings.log_line_max_chars)
                log.error("plugin directory %s not loaded: %s", path, exc)
        return results

    def broken_directories(self) -> dict[str, str]:
        """Plugins-dir entries the last `load_directory` could not load, with the reason; an
        install that puts a good plugin in the same directory clears its entry."""
        return dict(self._broken)

    async def install(self, upload: IO[bytes]) -> tuple[PluginView, bool]:
        """Install or update a disk plugin from a zip; returns (view, updated)."""
        entry, updated = await self._installer.install(upload)
        if entry.record.path is not None:
            self._broken.pop(Path(entry.record.path).name, None)
        return PluginView.of(entry), updated

    async def install_from_url(self, url: str, sha256: str | None = None) -> tuple[PluginView, bool]:
        """Install or update from a zip at `url` (SSRF-guarded like net.fetch, size-capped, optionally
        pinned by sha256); DownloadError when it cannot be fetched."""
        return await self.install(io.BytesIO(await fetch_archive(self.fetch, self.settings, url, sha256)))

    def catalog(self) -> list[dict[str, Any]]:
        """What the catalog directory offers to install, each marked with the version installed now."""
        installed = {v.plugin_id: v.manifest.version for v in self.plugins()}
        return catalog_entries(self.settings, self.builtin_ids(), installed)

    async def install_from_catalog(self, plugin_id: str) -> tuple[PluginView, bool]:
        """Install or update the catalog's plugin `plugin_id`; PluginNotFound if it has none."""
        data = await asyncio.to_thread(catalog_archive, self.settings, plugin_id)
        return await self.install(io.BytesIO(data))

    # -- lifecycle --
    async def enable(self, plugin_id: str) -> PluginView:
        return PluginView.of(await self.manager.enable(plugin_id))

    async def disable(self, plugin_id: str) -> PluginView:
        return PluginView.of(await self.manager.disable(plugin_id))

    async def uninstall(self, plugin_id: str) -> None:
        await self.manager.uninstall(plugin_id)
        if self.packages is not None:
            self._installer.digests.pop(plugin_id, None)
            await self.packages.delete(plugin_id)

    async def set_config(self, plugin_id: str, config: Any) -> PluginView:
        return PluginView.of(await self.manager.set_config(plugin_id, config))

    async def set_session_config(self, plugin_id: str, session_id: str, config: Any) -> PluginView:
        return PluginView.of(await self.manager.set_session_config(plugin_id, session_id, config))

    async def set_active_sessions(self, plugin_id: str, sessions: Collection[str]) -> PluginView:
        return PluginView.of(await self.manager.set_active_sessions(plugin_id, sessions))

    # -- reading --
    def plugins(self) -> list[PluginView]:
        """Every known plugin, by id."""
        return self.manager.views()

    def plugin(self, plugin_id: str) -> PluginView:
        """One plugin; PluginNotFound if unknown."""
        return self.manager.view(plugin_id)

    def plugin_hosts(self, plugin_id: str) -> list[HostReport]:
        """What every host sharing the database last observed of the plugin (just this one on
        SQLite), each marked live or not; PluginNotFound if unknown here."""
        return plugin_hosts(self.manager.view(plugin_id), self.registry, self.db.live_hosts())

    async def health(self, plugin_id: str) -> dict[str, Any]:
        """`{"healthy": bool, "message": str}` under the health budget."""
        return await self.manager.health(plugin_id)

    # -- dispatch --
    async def inject_inbound(self, session_id: str, chat_id: str, body: str,
                             sender: str | None = None) -> dict[str, Any]:
        """Receive a message through the loopback engine and return it once every `message:received`
        handler has answered, observers included (the engine itself does not wait for those): the
        API's injection and the test harness show the replies it caused."""
        outcomes: list[HookOutcome] = []
        token = _inbound_outcomes.set(outcomes)
        try:
            message = await self.loopback.inject_inbound(session_id, chat_id, body, sender)
        finally:
            _inbound_outcomes.reset(token)
        for outcome in outcomes:
            await outcome.settled()
        return message

    async def dispatch(self, event: str, data: Any, session_id: str | None = None, source: str = "host") -> HookOutcome:
        """Run the hook chain of `event` once and return when every handler has answered, the
        observers too (the host's own event sources do not wait for those; an adapter that reports
        what the handlers did does)."""
        return await (await self.bus.execute(event, data, session_id, source=source)).settled()

    def ingress_route(self, plugin_id: str, route: str,
                      instance_id: str = ingress.DEFAULT_INSTANCE) -> ingress.IngressTarget | None:
        """The declared ingress route on one of the plugin's instances, or None when the plugin,
        route or instance is unknown."""
        return ingress.find_route(self.manager, plugin_id, route, instance_id, self._operator_instance)

    def session_gone(self, session_id: str) -> bool:
        """The engine no longer has `session_id`, or has it failed (`error`): what an ingress route's
        `session-alive` preflight refuses. A session starting, showing a QR or reconnecting is not
        gone: a delivery for it may still be handled once it is back."""
        found = next((s for s in self.engine.sessions() if s.get("id") == session_id), None)
        return found is None or found.get("status") in ("error", "deleted")

    def _operator_instance(self, plugin_id: str, instance_id: str) -> tuple[dict[str, Any], str | None] | None:
        found = self.ingress_instances.get(plugin_id, instance_id)
        return None if found is None else (found.config(), found.session_id)

    async def dispatch_ingress(self, plugin_id: str, route: str, request: dict[str, Any],
                               about: dict[str, Any] | None = None) -> ingress.IngressReply:
        """Run the plugin's webhook handler for a verified request of a sync route, under the hook budget."""
        return await ingress.dispatch(self.manager, self.bus, plugin_id, route, request, about=about)

    async def _dispatch_queued(self, plugin_id: str, route: str, request: dict[str, Any], budget_ms: int,
                               about: dict[str, Any]) -> ingress.IngressReply:
        return await ingress.dispatch(self.manager, self.bus, plugin_id, route, request, budget_ms=budget_ms,
                                      about=about, queued=True)

    # -- start / stop --
    async def start(self, *, restore: bool = True) -> None:
        self._started = True
        soft, _hard = raise_open_files(self.settings.host_open_files)
        if soft < self.settings.host_open_files:
            log.info("open-file limit %d (the hard limit; host_open_files asks %d): room for about %d workers",
                     soft, self.settings.host_open_files, soft // 2)
        self.webhooks.start()
        self.ingress.start()
        self._channel_sweep.start()
        if self.cluster is not None:  # catch up with the other hosts before restoring
            await self.cluster.start()
        if restore:
            await self._restore()
        if self.cluster is not None:
            await self.cluster.take_sessions()
        if isinstance(self.engine, EngineLifecycle):  # after restore: enabled plugins see session:ready
            await self.engine.start()

    async def _restore(self) -> None:
        """Re-enable the operator's plugins, waiting at most `boot_restore_wait_ms`: the rest finish
        in the background (they miss the engine's first `session:ready`, as a plugin the operator
        enables later does)."""
        self._restoring = asyncio.ensure_future(self.manager.restore())
        wait = self.settings.boot_restore_wait_ms / 1000
        try:
            await asyncio.wait_for(asyncio.shield(self._restoring), wait)
        except TimeoutError:
            late = self.manager.enabling_ids()
            log.warning("boot: %d plugins still enabling after %g s (%s); starting without them, they come up "
                        "in the background (boot_restore_wait_ms)", len(late), wait, ", ".join(late))

    async def stop(self) -> None:
        if self._started:
            self._started = False
            restoring, self._restoring = self._restoring, None
            if restoring is not None and not restoring.done():  # plugins still enabling: stop them now
                restoring.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await restoring
            if self.cluster is not None:
                await self.cluster.stop()
            self.conversations.close()
            await self.webhooks.stop()
            await self.ingress.stop()
            await self.manager.shutdown()
            self._channel_sweep.close()
            await self.zygote.close()
            if isinstance(self.engine, EngineLifecycle):
                await self.engine.aclose()
        await self.db.close()

    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
