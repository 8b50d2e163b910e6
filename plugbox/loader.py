"""Plugin lifecycle and statuses (SPEC §5): the registry of known plugins, enable/disable/uninstall,
config and session activation, persistence of the operator's choices, boot-time restore, restart
with backoff after a crash and the circuit breaker.

Loading validates and registers; it runs no plugin code. Where a plugin's code runs (in-process
or in a confined worker) is the runtime's business (`plugbox.runtime`); every budget around a
runtime call is applied here, visibly, at the call site.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from plugbox.errors import CapabilityError, ConfigError, PluginNotFound, PluginStateError, WorkerGone
from plugbox.logrelay import LogRelay
from plugbox.manifest import Manifest
from plugbox.permissions import SessionScope, check_permission
from plugbox.runtime import PluginRuntime, RuntimeDeps, RuntimeFactory
from plugbox.settings import Settings
from plugbox.storage.registry import PluginRecord, Registry

__all__ = ["PluginEntry", "PluginManager", "Status"]

log = logging.getLogger("plugbox.loader")


class Status:
    INSTALLED = "installed"
    ENABLED = "enabled"
    DISABLED = "disabled"
    ERROR = "error"


class PluginEntry:
    """One known plugin: its manifest, persisted record and, while enabled, its runtime."""

    def __init__(self, manifest: Manifest, record: PluginRecord, factory: RuntimeFactory, settings: Settings) -> None:
        self.manifest = manifest
        # Identity, as the capability router sees it (plugbox.capabilities.router.Caller): plain
        # attributes, read on every capability call; the manifest never changes for an entry.
        self.plugin_id: str = manifest.id
        self.permissions: Collection[str] = manifest.permissions
        self.record = record
        self.factory = factory
        self.runtime: PluginRuntime | None = None
        self.confinement: list[dict[str, Any]] | None = None
        self.logs = LogRelay(
            manifest.id,
            secrets=self.secret_values,
            lines_per_window=settings.log_lines_per_window,
            window_s=settings.log_window_ms / 1000,
            max_chars=settings.log_line_max_chars,
        )
        self._scope = self._make_scope()
        self._enabling: asyncio.Future[None] | None = None
        self._disabling: asyncio.Task[None] | None = None
        self._restart: asyncio.Task[None] | None = None

    @property
    def scope(self) -> SessionScope:
        return self._scope

    @property
    def builtin(self) -> bool:
        return self.record.source == "builtin"

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def error(self) -> str | None:
        return self.record.error

    @property
    def config(self) -> dict[str, Any]:
        return self.record.config

    def _make_scope(self) -> SessionScope:
        return SessionScope(self.manifest.sessions, self.manifest.session_scoped, self.record.active_sessions)

    def session_config(self, session_id: str | None) -> dict[str, Any]:
        """The base config with the session's overrides on top. Without overrides this is the
        record's own dict, not a copy: callers that hand it to plugin code copy it themselves."""
        overrides = self.record.session_config.get(session_id) if session_id is not None else None
        if not overrides:
            return self.record.config
        return {**self.record.config, **overrides}

    def hook_config(self, session_id: str | None) -> dict[str, Any] | None:
        """What a hook of this plugin sees as config for `session_id`, or None when the session
        is outside its scope (one call on the dispatch path, for `in_scope` + `session_config`)."""
        record = self.record
        if session_id is None:
            return record.config
        scope = self._scope
        if not scope.permits(session_id) or (scope.session_scoped and session_id not in scope.active):
            return None
        overrides = record.session_config.get(session_id)
        return {**record.config, **overrides} if overrides else record.config

    def secret_values(self) -> list[str]:
        schema = self.manifest.config_schema
        if schema is None:
            return []
        out = list(schema.secret_values(self.record.config))
        for cfg in self.record.session_config.values():
            out.extend(schema.secret_values(cfg))
        return out

    def check_webhook_route(self, route: str) -> None:
        check_permission(self.plugin_id, self.permissions, "webhook:ingress", "register_webhook")
        if route not in {r.route for r in self.manifest.ingress}:
            raise CapabilityError(f"register_webhook: route {route!r} is not declared in the manifest ingress")

    def check_search_provider(self) -> None:
        check_permission(self.plugin_id, self.permissions, "search:provide", "register_search_provider")

    def describe(self) -> dict[str, Any]:
        schema = self.manifest.config_schema
        return {
            "id": self.plugin_id,
            "name": self.manifest.name,
            "version": self.manifest.version,
            "tier": "builtin" if self.builtin else "sandboxed",
            "status": self.status,
            "error": self.error,
            "enabled": self.record.enabled,
            "permissions": sorted(self.permissions),
            "sessions": list(self.manifest.sessions),
            "activeSessions": list(self.record.active_sessions),
            "config": schema.mask(self.record.config) if schema else dict(self.record.config),
            "confinement": self.confinement,
            "degraded": bool(self.confinement) and any(
                not layer.get("applied") and not layer.get("skipped") for layer in self.confinement or []),
            "consecutiveFailures": self.record.consecutive_failures,
        }


class PluginManager:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        purgers: Sequence[Callable[[str], Awaitable[object]]],
        deps_factory: Callable[[], RuntimeDeps],
    ) -> None:
        self.settings = settings
        self._registry = registry
        self._purgers = purgers  # each deletes one store's data of a plugin, on uninstall
        self._deps_factory = deps_factory
        self._deps: RuntimeDeps | None = None
        self.entries: dict[str, PluginEntry] = {}
        self._closing = False

    @property
    def deps(self) -> RuntimeDeps:
        if self._deps is None:
            self._deps = self._deps_factory()
        return self._deps

    # -- registration (runs no plugin code) --
    def add(self, manifest: Manifest, factory: RuntimeFactory, *, source: str, path: Path | None = None) -> PluginEntry:
        if manifest.id in self.entries:
            raise PluginStateError(f"plugin id {manifest.id!r} is already registered")
        record = self._registry.get(manifest.id)
        if record is None or record.source != source:
            record = PluginRecord(plugin_id=manifest.id, source=source)
        record.path = str(path) if path else None
        if manifest.config_schema is not None:
            try:
                record.config = manifest.config_schema.validate(record.config)
            except ConfigError as exc:
                record.status, record.error = Status.ERROR, f"stored config invalid: {exc}"
        if record.status == Status.ENABLED:  # not running yet in this process
            record.status = Status.DISABLED if not record.enabled else Status.INSTALLED
        entry = PluginEntry(manifest, record, factory, self.settings)
        self.entries[manifest.id] = entry
        return entry

    def get(self, plugin_id: str) -> PluginEntry:
        entry = self.entries.get(plugin_id)
        if entry is None:
            raise PluginNotFound(plugin_id)
        return entry

    async def _persist(self, entry: PluginEntry) -> None:
        entry.record.updated_at = time.time()
        await self._registry.put(entry.record)

    def _set_status(self, entry: PluginEntry, status: str, error: str | None = None) -> None:
        entry.record.status = status
        entry.record.error = error

    # -- enable --
    async def enable(self, plugin_id: str) -> PluginEntry:
        """Start the plugin. A second enable while one is in flight is refused."""
        entry = self.get(plugin_id)
        if entry._enabling is not None:
            raise PluginStateError(f"plugin {plugin_id!r}: an enable is already in flight")
        # Claim the enable before any await, so a second caller is refused even while we wait
        # for a disable in flight to finish.
        enabling = entry._enabling = asyncio.get_running_loop().create_future()
        try:
            if entry._disabling is not None:
                await asyncio.shield(entry._disabling)
            if entry.status == Status.ENABLED:
                return entry
            if entry._restart is not None:
                entry._restart.cancel()
                entry._restart = None
            entry.record.enabled = True
            entry.record.consecutive_failures = 0
            await self._start(entry)
        finally:
            entry._enabling = None
            enabling.set_result(None)
        if entry.status == Status.ERROR:
            raise PluginStateError(f"plugin {plugin_id!r} failed to enable: {entry.error}")
        return entry

    async def _start(self, entry: PluginEntry) -> None:
        """Create the runtime and run load → on_load → on_enable, each under the lifecycle budget.
        On any failure: no runtime, no hooks, status `error` with the reason."""
        budget = self.settings.lifecycle_budget_ms / 1000
        schema = entry.manifest.config_schema
        if schema is not None:  # a stored config the (possibly upgraded) schema refuses is not run with
            try:
                schema.validate(entry.record.config)
                for cfg in entry.record.session_config.values():
                    schema.validate({**entry.record.config, **cfg})
            except ConfigError as exc:
                self._set_status(entry, Status.ERROR, f"config does not satisfy the plugin's configSchema: {exc}")
                await self._persist(entry)
                return
        runtime = entry.factory(entry, self.deps)
        entry.runtime = runtime
        step = "start"
        try:
            async with asyncio.timeout(budget):
                await runtime.start()
            entry.confinement = runtime.confinement
            for step in ("on_load", "on_enable"):
                async with asyncio.timeout(budget):
                    await runtime.lifecycle(step)
        except asyncio.CancelledError:
            # Cancelled (shutdown, Ctrl-C): leave nothing half-started behind, then let it through.
            await asyncio.shield(self._teardown(entry))
            self._set_status(entry, Status.ERROR, f"{step} was cancelled")
            raise
        except Exception as exc:
            reason = f"{step} timed out after {budget:g} s" if isinstance(exc, TimeoutError) else _describe(step, exc)
            entry.confinement = runtime.confinement  # what was applied, or which layer was missing
            await self._teardown(entry)
            self._set_status(entry, Status.ERROR, reason)
            entry.logs.emit("error", f"enable failed: {reason}")
            await self._persist(entry)
            return
        self._set_status(entry, Status.ENABLED)
        await self._persist(entry)
        log.info("plugin %s enabled", entry.plugin_id)

    async def _teardown(self, entry: PluginEntry) -> None:
        self.deps.bus.unregister_plugin(entry.plugin_id)
        runtime, entry.runtime = entry.runtime, None
        if runtime is not None:
            try:
                await runtime.stop()
            except Exception:
                log.exception("plugin %s: runtime stop failed", entry.plugin_id)

    # -- disable --
    async def disable(self, plugin_id: str, *, operator: bool = True, budget: float | None = None) -> PluginEntry:
        """Stop the plugin. Concurrent disables join the one in flight."""
        entry = self.get(plugin_id)
        if entry._disabling is None:
            entry._disabling = asyncio.ensure_future(self._stop(entry, operator, budget))
            entry._disabling.add_done_callback(lambda _t: setattr(entry, "_disabling", None))
        await asyncio.shield(entry._disabling)
        return entry

    async def _stop(self, entry: PluginEntry, operator: bool, budget: float | None) -> None:
        if entry._enabling is not None:
            await asyncio.shield(entry._enabling)
        if entry._restart is not None:
            entry._restart.cancel()
            entry._restart = None
        if operator:
            entry.record.enabled = False
        if entry.runtime is not None:
            cap = budget if budget is not None else self.settings.lifecycle_budget_ms / 1000
            deadline = asyncio.get_running_loop().time() + cap
            for step in ("on_disable", "on_unload"):  # one cap for both; failures are logged, not fatal
                try:
                    async with asyncio.timeout_at(deadline):
                        await entry.runtime.lifecycle(step)
                except WorkerGone as exc:  # it died just before (its death is reported on its own)
                    entry.logs.emit("info", f"on_disable and on_unload skipped: the worker is already gone ({exc})")
                    break
                except Exception as exc:
                    entry.logs.emit("warning", f"{step} failed: {_describe(step, exc)}")
            await self._teardown(entry)
        if entry.status != Status.ERROR or operator:
            self._set_status(entry, Status.DISABLED)
        await self._persist(entry)

    # -- failures reported by a runtime (crash, kill, unresponsive) --
    def runtime_failed(self, entry: PluginEntry, reason: str, *, counted: bool = False) -> bool:
        """Called by a runtime whose worker died or was killed. Restarts with exponential backoff
        until the circuit breaker trips. `counted`: the death ends a hook timeout that
        `runtime_timed_out` has already counted (a liveness kill), so it is not counted again.
        Returns False when nothing was done (closing, disabling, or not enabled)."""
        if self._closing or entry._disabling is not None or entry.status != Status.ENABLED:
            return False
        if not counted:
            entry.record.consecutive_failures += 1
        failures = entry.record.consecutive_failures
        entry.logs.emit("error", f"worker failed: {reason}")
        if failures >= self.settings.breaker_threshold:
            reason = f"circuit breaker open after {failures} consecutive failures; last: {reason}"
            self._set_status(entry, Status.ERROR, reason)
        else:
            self._set_status(entry, Status.ERROR, f"restarting after failure: {reason}")
        entry._restart = asyncio.ensure_future(self._restart_after_failure(entry, failures))
        return True

    def runtime_timed_out(self, entry: PluginEntry) -> None:
        """A hook ran past its budget. Timeouts count toward the breaker like crashes do."""
        if entry.status != Status.ENABLED:
            return
        if entry.record.consecutive_failures + 1 >= self.settings.breaker_threshold:
            self.runtime_failed(entry, "hook budget exceeded repeatedly")  # counts this failure
        else:
            entry.record.consecutive_failures += 1

    def record_success(self, plugin_id: str) -> None:
        entry = self.entries.get(plugin_id)
        if entry is not None and entry.record.consecutive_failures and entry.status == Status.ENABLED:
            entry.record.consecutive_failures = 0

    async def _restart_after_failure(self, entry: PluginEntry, failures: int) -> None:
        await self._teardown(entry)
        if failures >= self.settings.breaker_threshold:
            await self._persist(entry)
            log.error("plugin %s: %s", entry.plugin_id, entry.error)
            return
        delay = min(
            self.settings.restart_backoff_initial_ms * 2 ** (failures - 1), self.settings.restart_backoff_max_ms
        ) / 1000
        await self._persist(entry)
        await asyncio.sleep(delay)
        entry._restart = None
        if self._closing or not entry.record.enabled:
            return
        await self._start(entry)  # the failure count stands until a later success resets it

    # -- config and sessions --
    async def set_config(self, plugin_id: str, config: Any) -> PluginEntry:
        entry = self.get(plugin_id)
        schema = entry.manifest.config_schema
        if not isinstance(config, dict):
            raise ConfigError("config", "expected an object")
        new = schema.merge_update(entry.record.config, config) if schema else dict(config)
        entry.record.config = new
        await self._persist(entry)
        await self._notify_config(entry)
        return entry

    async def set_session_config(self, plugin_id: str, session_id: str, config: Any) -> PluginEntry:
        entry = self.get(plugin_id)
        schema = entry.manifest.config_schema
        if not isinstance(config, dict):
            raise ConfigError("config", "expected an object")
        if schema is not None:
            old = entry.record.session_config.get(session_id, {})
            merged = schema.merge_update({**entry.record.config, **old}, config)
            config = {k: v for k, v in merged.items() if k in config or k in old}
        entry.record.session_config[session_id] = dict(config)
        await self._persist(entry)
        return entry

    async def _notify_config(self, entry: PluginEntry) -> None:
        if entry.runtime is None or entry.status != Status.ENABLED:
            return
        try:
            async with asyncio.timeout(self.settings.lifecycle_budget_ms / 1000):
                await entry.runtime.config_changed(dict(entry.record.config))
        except Exception as exc:
            entry.logs.emit("warning", f"on_config_change failed: {_describe('on_config_change', exc)}")

    async def set_active_sessions(self, plugin_id: str, sessions: Collection[str]) -> PluginEntry:
        entry = self.get(plugin_id)
        wanted = sorted(set(sessions))
        for s in wanted:
            if not isinstance(s, str) or not s:
                raise ConfigError("activeSessions", "session ids must be non-empty strings")
            if not SessionScope(entry.manifest.sessions, True, ()).permits(s):
                raise ConfigError("activeSessions", f"session {s!r} is not in the manifest sessions")
        entry.record.active_sessions = wanted
        entry._scope = entry._make_scope()
        await self._persist(entry)
        return entry

    # -- health --
    async def health(self, plugin_id: str) -> dict[str, Any]:
        entry = self.get(plugin_id)
        if entry.runtime is None or entry.status != Status.ENABLED:
            return {"healthy": False, "message": f"plugin is {entry.status}"}
        try:
            async with asyncio.timeout(self.settings.health_budget_ms / 1000):
                result = await entry.runtime.health()
        except Exception as exc:
            return {"healthy": False, "message": _describe("health_check", exc)}
        healthy = result.get("healthy") is True
        return {"healthy": healthy, "message": str(result.get("message", ""))[:1024]}

    # -- uninstall --
    async def uninstall(self, plugin_id: str) -> None:
        entry = self.get(plugin_id)
        if entry.builtin:
            raise PluginStateError(f"plugin {plugin_id!r} is built-in and cannot be uninstalled")
        await self.disable(plugin_id)
        for purge in self._purgers:
            await purge(plugin_id)
        await self._registry.delete(plugin_id)
        if entry.record.path:
            shutil.rmtree(entry.record.path, ignore_errors=True)
        del self.entries[plugin_id]

    # -- boot and shutdown --
    async def restore(self) -> None:
        """Re-enable what the operator had enabled; one failure does not block the rest."""
        for entry in list(self.entries.values()):
            if entry.record.enabled and entry.status != Status.ENABLED:
                try:
                    await self.enable(entry.plugin_id)
                except Exception as exc:
                    log.error("plugin %s: not re-enabled on boot: %s", entry.plugin_id, exc)

    async def shutdown(self) -> None:
        """Disable everything under one shared cap; the operator's choices are kept for next boot."""
        self._closing = True
        for entry in self.entries.values():
            if entry._restart is not None:
                entry._restart.cancel()
        cap = self.settings.shutdown_cap_ms / 1000
        deadline = asyncio.get_running_loop().time() + cap
        running = [e for e in self.entries.values() if e.runtime is not None]

        async def one(entry: PluginEntry) -> None:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            enabled = entry.record.enabled
            await self.disable(entry.plugin_id, operator=False, budget=remaining)
            entry.record.enabled = enabled
            await self._persist(entry)

        await asyncio.gather(*(one(e) for e in running), return_exceptions=True)


def _describe(step: str, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"{step} timed out"
    text = str(exc)
    return f"{step} raised {type(exc).__name__}: {text}" if text else f"{step} raised {type(exc).__name__}"
