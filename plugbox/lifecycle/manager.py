"""The plugin manager (SPEC §5): the registry of known plugins, enable/disable/uninstall, config and
session activation, persistence of the operator's choices, boot-time restore, restart with backoff
after a crash and the circuit breaker (counted by `plugbox.lifecycle.failures`).

Loading validates and registers; it runs no plugin code. Where a plugin's code runs (in-process
or in a confined worker) is the runtime's business (`plugbox.runtime`); every budget around a
runtime call is applied here, visibly, at the call site. The entries are private to this package:
everything outside reads `PluginView` snapshots.

Past 400 lines: the failure reactions (crash, timeout, handler error, denial → note, count, restart
or open the breaker) act on the same entries and tasks as enable/disable; `failures.py` holds the
rules, and splitting the reactions out would only pass the entries around.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from plugbox.errors import ConfigError, PluginNotFound, PluginStateError, WorkerGone
from plugbox.lifecycle.clock import Clock, SystemClock
from plugbox.lifecycle.entry import PluginEntry
from plugbox.lifecycle.failures import Breaker, FailureKind, Verdict, describe_failure
from plugbox.lifecycle.registry import PluginRecord, Registry
from plugbox.lifecycle.status import Status
from plugbox.lifecycle.view import PluginView
from plugbox.logrelay import sanitise
from plugbox.manifest import Manifest
from plugbox.runtime import PluginHandle, PluginRuntime, RuntimeDeps, RuntimeFactory
from plugbox.settings import Settings
from plugbox.totals.rate import RateTotal

__all__ = ["PluginManager"]

log = logging.getLogger("plugbox.lifecycle")

_HEALTH_MAX_CHARS = 1024  # a health message is one status line in the API and dashboard


class PluginManager:
    """Every known plugin of one host and what happens to it; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        purgers: Sequence[Callable[[str], Awaitable[object]]],
        deps_factory: Callable[[], RuntimeDeps],
        *,
        clock: Clock | None = None,
        on_worker_failed: Callable[[str, bool, str], None] | None = None,
        on_plugin_failure: Callable[[str, FailureKind], None] | None = None,
        on_log_line: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.settings = settings
        self._registry = registry
        self._purgers = purgers  # each deletes one store's data of a plugin, on uninstall
        self._deps_factory = deps_factory
        self._deps: RuntimeDeps | None = None
        self._clock = clock or SystemClock()
        self._breaker = Breaker(settings.breaker_threshold, settings.restart_backoff_initial_ms / 1000,
                                settings.restart_backoff_max_ms / 1000, stable_s=settings.breaker_stable_ms / 1000,
                                handler_error_threshold=settings.handler_error_threshold)
        # told (plugin id, restarting, reason) after the manager acted on a worker's death
        self._on_worker_failed = on_worker_failed
        self._on_plugin_failure = on_plugin_failure  # told (plugin id, kind) of every failure noted
        self._on_log_line = on_log_line  # told (plugin id, line) of every line a plugin's relay keeps
        # Host log bytes all plugins' relays share; usage decays over 2 s (lines come in bursts).
        self.log_total = RateTotal(settings.log_bytes_per_minute_total / 60, settings.log_bytes_total_burst,
                                   window=2.0)
        self._entries: dict[str, PluginEntry] = {}
        self._closing = False
        # Starting a worker is CPU-bound (fork, confinement, imports): past a few at once they only
        # slow each other down, and with a thousand at once the last ones would spend their whole
        # lifecycle budget waiting for a CPU.
        self._start_slots = asyncio.Semaphore(settings.worker_start_concurrency)

    @property
    def deps(self) -> RuntimeDeps:
        if self._deps is None:
            self._deps = self._deps_factory()
        return self._deps

    # -- registration (runs no plugin code) --
    def add(self, manifest: Manifest, factory: RuntimeFactory, *, source: str, path: Path | None = None) -> PluginEntry:
        if manifest.id in self._entries:
            raise PluginStateError(f"plugin id {manifest.id!r} is already registered")
        record = self._registry.get(manifest.id)
        if record is None or record.source != source:
            record = PluginRecord(plugin_id=manifest.id, source=source)
        else:
            observed = self._registry.observed(manifest.id)  # this host's own, not another's
            if observed is not None:
                record.status, record.error = observed.status, observed.error
                record.consecutive_failures, record.updated_at = observed.consecutive_failures, observed.updated_at
        record.path = str(path) if path else None
        if manifest.config_schema is not None:
            try:
                record.config = manifest.config_schema.validate(record.config)
            except ConfigError as exc:
                record.status, record.error = Status.ERROR, f"stored config invalid: {exc}"
        if record.status == Status.ENABLED:  # not running yet in this process
            record.status = Status.DISABLED if not record.enabled else Status.INSTALLED
        entry = PluginEntry(manifest, record, factory, self.settings, self._on_log_line, self.log_total)
        self._entries[manifest.id] = entry
        if record.status == Status.ERROR and record.error:
            self._note(entry, FailureKind.CONFIG_REJECTED if record.error.startswith("stored config")
                       else FailureKind.ENABLE_FAILED, record.error)
        return entry

    def forget(self, plugin_id: str) -> None:
        """Drop a stopped plugin from the known set, keeping its record and files (an update
        registers the new version under the same id)."""
        entry = self.get(plugin_id)
        if entry.runtime is not None:
            raise PluginStateError(f"plugin {plugin_id!r} is still running")
        del self._entries[plugin_id]

    def get(self, plugin_id: str) -> PluginEntry:
        entry = self._entries.get(plugin_id)
        if entry is None:
            raise PluginNotFound(plugin_id)
        return entry

    def __contains__(self, plugin_id: object) -> bool:
        return plugin_id in self._entries

    # -- views --
    def view(self, plugin_id: str) -> PluginView:
        return PluginView.of(self.get(plugin_id))

    def views(self) -> list[PluginView]:
        """A snapshot of every known plugin, by id."""
        return [PluginView.of(self._entries[pid]) for pid in sorted(self._entries)]

    def builtin_ids(self) -> set[str]:
        return {pid for pid, e in self._entries.items() if e.builtin}

    def hook_config(self, plugin_id: str, session_id: str | None) -> dict[str, Any] | None:
        """The hook bus's scope question: the plugin's config for a hook on `session_id`, or None
        when that session is not its business (or the plugin is gone)."""
        entry = self._entries.get(plugin_id)
        return None if entry is None else entry.hook_config(session_id)

    def may_modify(self, plugin_id: str) -> bool:
        """The hook bus's permission question: may the plugin's handlers rewrite or halt events
        (`hooks:modify`), or do they only observe."""
        entry = self._entries.get(plugin_id)
        return entry is not None and "hooks:modify" in entry.permissions

    def holding(self, permissions: Collection[str]) -> frozenset[str]:
        """The plugins granted any of `permissions` (the handover gate's bots)."""
        return frozenset(pid for pid, e in self._entries.items() if any(p in e.permissions for p in permissions))

    def running(self, plugin_id: str) -> tuple[PluginEntry, PluginRuntime] | None:
        """The entry and runtime of an enabled plugin; None when it is unknown or not running."""
        entry = self._entries.get(plugin_id)
        if entry is None or entry.runtime is None or entry.status != Status.ENABLED:
            return None
        return entry, entry.runtime

    def running_ids(self) -> list[str]:
        return sorted(pid for pid in self._entries if self.running(pid) is not None)

    def enabling_ids(self) -> list[str]:
        """The plugins with an enable in flight."""
        return sorted(pid for pid, entry in self._entries.items() if entry.enabling is not None)

    def _note(self, entry: PluginEntry, kind: FailureKind, message: str) -> None:
        """Every failure of every class passes here: `lastError`, the recent failures, the counters."""
        entry.note_failure(kind, message, self._clock.time())
        if self._on_plugin_failure is not None:
            self._on_plugin_failure(entry.plugin_id, kind)

    def _running_for(self, entry: PluginEntry) -> float:
        return self._clock.time() - entry.started_at

    async def _persist(self, entry: PluginEntry, *, intent: bool) -> None:
        """Store this host's observation of the plugin and, with `intent` (the operator acted here),
        the operator's choices too. A status change alone must not write the shared record: it would
        put back this host's copy of config another host has just changed."""
        entry.record.updated_at = self._clock.time()
        if intent:
            await self._registry.put(entry.record)
        else:
            await self._registry.observe(entry.record)

    # -- enable --
    async def enable(self, plugin_id: str, *, restoring: bool = False) -> PluginEntry:
        """Start the plugin. A second enable while one is in flight is refused. `restoring`: the
        boot's re-enable, which yields to an operator's disable requested before it got its turn."""
        entry = self.get(plugin_id)
        if entry.enabling is not None:
            raise PluginStateError(f"plugin {plugin_id!r}: an enable is already in flight")
        # Claim the enable before any await, so a second caller is refused even while we wait
        # for a disable in flight to finish.
        enabling = entry.enabling = asyncio.get_running_loop().create_future()
        try:
            if entry.disabling is not None:
                await asyncio.shield(entry.disabling)
            if entry.status == Status.ENABLED or (restoring and not entry.record.enabled):
                return entry
            if entry.restart is not None:
                entry.restart.cancel()
                entry.restart = None
            entry.record.enabled = True
            self._breaker.reset(entry.record)
            await self._start(entry, intent=True)
        finally:
            entry.enabling = None
            enabling.set_result(None)
        if entry.status == Status.ERROR:
            raise PluginStateError(f"plugin {plugin_id!r} failed to enable: {entry.error}")
        return entry

    async def _start(self, entry: PluginEntry, *, intent: bool) -> None:
        """Create the runtime and run load → on_load → on_enable, each under the lifecycle budget.
        On any failure: no runtime, no hooks, status `error` with the reason. `intent`: an operator's
        enable (stored with the outcome), not a restart after a failure."""
        budget = self.settings.lifecycle_budget_ms / 1000
        problem = entry.stored_config_problem()  # an (upgraded) schema may refuse what is stored
        if problem is not None:
            entry.set_status(Status.ERROR, problem)
            self._note(entry, FailureKind.CONFIG_REJECTED, problem)
            await self._persist(entry, intent=intent)
            return
        runtime = entry.factory(entry, self.deps)
        entry.runtime = runtime
        step = "start"
        try:
            async with self._start_slots:  # a burst of enables queues here, before its budget runs
                async with asyncio.timeout(budget):
                    await runtime.start()
            entry.confinement = runtime.confinement
            for step in ("on_load", "on_enable"):
                async with asyncio.timeout(budget):
                    await runtime.lifecycle(step)
        except asyncio.CancelledError:
            # Cancelled (shutdown, Ctrl-C): leave nothing half-started behind, then let it through.
            await asyncio.shield(self._teardown(entry))
            entry.set_status(Status.ERROR, f"{step} was cancelled")
            raise
        except Exception as exc:
            timed_out = isinstance(exc, TimeoutError)
            reason = f"{step} timed out after {budget:g} s" if timed_out else describe_failure(step, exc)
            entry.confinement = runtime.confinement  # what was applied, or which layer was missing
            await self._teardown(entry)
            entry.set_status(Status.ERROR, reason)
            self._note(entry, FailureKind.ENABLE_FAILED, reason)
            entry.logs.emit("error", f"enable failed: {reason}")
            await self._persist(entry, intent=intent)
            return
        entry.set_status(Status.ENABLED)
        entry.started_at = self._clock.time()
        entry.handler_errors = 0
        await self._persist(entry, intent=intent)
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
        if entry.disabling is None:
            # It waits for an enable already in flight, never for one requested after it (that
            # one waits for this disable: each waiting for the other would hang both).
            entry.disabling = asyncio.ensure_future(self._stop(entry, operator, budget, entry.enabling))
            entry.disabling.add_done_callback(lambda _t: setattr(entry, "disabling", None))
        await asyncio.shield(entry.disabling)
        return entry

    async def _stop(self, entry: PluginEntry, operator: bool, budget: float | None,
                    enabling: asyncio.Future[None] | None) -> None:
        if enabling is not None:
            await asyncio.shield(enabling)
        if entry.restart is not None:
            entry.restart.cancel()
            entry.restart = None
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
                    entry.logs.emit("warning", f"{step} failed: {describe_failure(step, exc)}")
            await self._teardown(entry)
        if entry.status != Status.ERROR or operator:
            entry.set_status(Status.DISABLED)
        await self._persist(entry, intent=operator)

    # -- failures reported by a runtime (crash, kill, unresponsive) --
    def runtime_failed(self, plugin: PluginHandle, reason: str, counted: bool = False, *, oom: bool = False) -> None:
        """A runtime's worker died or was killed (`RuntimeDeps.on_failure`). `counted`: the death
        ends a hook timeout that `hook_timed_out` has already counted (a liveness kill); `oom`: the
        kernel's OOM killer ended it (its class is then `worker_oom`, counted like a crash). Ignored
        while closing or disabling, when the plugin is not enabled, or when the report comes from
        a plugin this manager no longer knows (a version replaced by an update)."""
        entry = self._entries.get(plugin.plugin_id)
        if entry is not plugin or self._closing or entry.disabling is not None or entry.status != Status.ENABLED:
            return
        verdict = self._breaker.crashed(entry.record, self._running_for(entry), already_counted=counted)
        self._note(entry, FailureKind.WORKER_OOM if oom else FailureKind.WORKER_CRASH, reason)
        self._failed(entry, reason, verdict)
        if self._on_worker_failed is not None:
            self._on_worker_failed(entry.plugin_id, not verdict.open, reason)

    def hook_timed_out(self, plugin_id: str) -> None:
        """A hook (or webhook) of the plugin ran past its budget: ping its worker for liveness and
        count the failure; at the threshold the breaker stops the plugin."""
        entry = self._entries.get(plugin_id)
        if entry is None or entry.status != Status.ENABLED:
            return
        if entry.runtime is not None:
            entry.runtime.hook_timed_out()
        verdict = self._breaker.timed_out(entry.record, self._running_for(entry))
        self._note(entry, FailureKind.HOOK_TIMEOUT, "a hook handler ran past its budget")
        if verdict.open:
            self._failed(entry, "hook budget exceeded repeatedly", verdict)

    def plugin_says(self, plugin_id: str, level: str, context: str, text: str) -> str:
        """The hook bus prints a plugin's text (its handler's error) through that plugin's relay,
        charged to its rate limit; returns the text as sanitised."""
        entry = self._entries.get(plugin_id)
        if entry is None:  # uninstalled mid-chain: still never raw plugin text in the host log
            text = sanitise(text, (), self.settings.log_line_max_chars)
            log.warning("plugin %s: %s%s", plugin_id, context, text)
            return text
        return entry.logs.report(level, context, text)

    def record_success(self, plugin_id: str) -> None:
        """A handler of the plugin answered (on the path of every hook: cheap when nothing is owed)."""
        entry = self._entries.get(plugin_id)
        if entry is None or entry.record.status != Status.ENABLED:  # (a str: no Enum built per hook)
            return
        entry.handler_errors = 0
        if entry.record.consecutive_failures:
            self._breaker.succeeded(entry.record, self._running_for(entry))

    def handler_failed(self, plugin_id: str, message: str) -> None:
        """A handler of the plugin raised or returned an error; at the threshold in a row the
        breaker opens (its hooks are removed, the plugin goes to `error`)."""
        entry = self._entries.get(plugin_id)
        if entry is None or entry.status != Status.ENABLED:
            return
        self._note(entry, FailureKind.HANDLER_ERROR, message)  # the bus has relayed it to the plugin's log
        entry.handler_errors += 1
        verdict = self._breaker.handler_failed(entry.handler_errors)
        if verdict.open:
            self._failed(entry, message, verdict, what="handler errors")

    def capability_denied(self, plugin_id: str, message: str) -> None:
        """A capability call of the plugin was refused for a permission its manifest lacks."""
        entry = self._entries.get(plugin_id)
        if entry is not None:
            self._note(entry, FailureKind.PERMISSION_DENIED, message)
            entry.logs.emit("warning", message)

    def _failed(self, entry: PluginEntry, reason: str, verdict: Verdict, what: str = "failures") -> None:
        entry.logs.emit("error", f"worker failed: {reason}" if what == "failures" else f"breaker: {reason}")
        if verdict.open:
            entry.set_status(Status.ERROR, f"circuit breaker open after {verdict.failures} consecutive {what}; "
                                           f"last: {reason}")
            self._note(entry, FailureKind.BREAKER_OPEN, entry.error or "")
        else:
            entry.set_status(Status.ERROR, f"restarting after failure: {reason}")
        entry.restart = asyncio.ensure_future(self._restart_after_failure(entry, verdict))

    async def _restart_after_failure(self, entry: PluginEntry, verdict: Verdict) -> None:
        await self._teardown(entry)
        await self._persist(entry, intent=False)
        if verdict.open:
            log.error("plugin %s: %s", entry.plugin_id, entry.error)
            return
        await self._clock.sleep(self._breaker.backoff(verdict.failures))
        entry.restart = None
        if self._closing or not entry.record.enabled:
            return
        await self._start(entry, intent=False)  # the failure count stands until a later success resets it

    # -- config and sessions --
    async def set_config(self, plugin_id: str, config: Any) -> PluginEntry:
        entry = self.get(plugin_id)
        schema = entry.manifest.config_schema
        if not isinstance(config, dict):
            raise ConfigError("config", "expected an object")
        new = schema.merge_update(entry.record.config, config) if schema else dict(config)
        entry.record.config = new
        await self._persist(entry, intent=True)
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
        await self._persist(entry, intent=True)
        return entry

    async def _notify_config(self, entry: PluginEntry) -> None:
        if entry.runtime is None or entry.status != Status.ENABLED:
            return
        try:
            async with asyncio.timeout(self.settings.lifecycle_budget_ms / 1000):
                await entry.runtime.config_changed(dict(entry.record.config))
        except Exception as exc:
            entry.logs.emit("warning", f"on_config_change failed: {describe_failure('on_config_change', exc)}")

    async def set_active_sessions(self, plugin_id: str, sessions: Collection[str]) -> PluginEntry:
        entry = self.get(plugin_id)
        wanted = sorted(set(sessions))
        for s in wanted:
            if not isinstance(s, str) or not s:
                raise ConfigError("activeSessions", "session ids must be non-empty strings")
            if not entry.scope.permits(s):
                raise ConfigError("activeSessions", f"session {s!r} is not in the manifest sessions")
        entry.set_active_sessions(wanted)
        await self._persist(entry, intent=True)
        return entry

    # -- another host's changes (a shared database) --
    async def follow(self, record: PluginRecord) -> None:
        """Apply what another host sharing the database recorded for a plugin this host knows: its
        config, per-session config, active sessions and the operator's enabled choice. A plugin in
        `error` here is not retried on another host's word (two hosts failing the same enable would
        otherwise retry each other forever); the operator's next enable on this host does."""
        entry = self.get(record.plugin_id)
        config_changed = record.config != entry.record.config
        entry.record.config = dict(record.config)
        entry.record.session_config = {k: dict(v) for k, v in record.session_config.items()}
        if record.active_sessions != entry.record.active_sessions:
            entry.set_active_sessions(list(record.active_sessions))
        if config_changed:
            await self._notify_config(entry)
        if record.enabled and entry.status in (Status.INSTALLED, Status.DISABLED) and entry.enabling is None:
            await self.enable(record.plugin_id)
        elif not record.enabled and entry.record.enabled:
            await self.disable(record.plugin_id)

    # -- health --
    async def health(self, plugin_id: str) -> dict[str, Any]:
        entry = self.get(plugin_id)
        if entry.runtime is None or entry.status != Status.ENABLED:
            return {"healthy": False, "message": f"plugin is {entry.status}"}
        try:
            async with asyncio.timeout(self.settings.health_budget_ms / 1000):
                result = await entry.runtime.health()
        except Exception as exc:
            return {"healthy": False,
                    "message": entry.logs.sanitise(describe_failure("health_check", exc), _HEALTH_MAX_CHARS)}
        healthy = result.get("healthy") is True
        message = result.get("message", "")
        text = message if isinstance(message, str) else "(not a string)"
        return {"healthy": healthy, "message": entry.logs.sanitise(text, _HEALTH_MAX_CHARS)}

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
        del self._entries[plugin_id]

    # -- boot and shutdown --
    async def restore(self) -> None:
        """Re-enable what the operator had enabled; one failure does not block the rest, and one slow
        plugin does not hold back the others: they are enabled together, the start slots
        (`worker_start_concurrency`) bounding how many workers start at once. (One after another,
        a plugin taking its lifecycle budget for each step, a success charged nothing, delayed every
        plugin after it by up to three budgets at every boot.)"""

        async def one(entry: PluginEntry) -> None:
            try:
                await self.enable(entry.plugin_id, restoring=True)
            except Exception as exc:
                log.error("plugin %s: not re-enabled on boot: %s", entry.plugin_id, exc)

        await asyncio.gather(*(one(entry) for entry in list(self._entries.values())
                               if entry.record.enabled and entry.status != Status.ENABLED))

    async def shutdown(self) -> None:
        """Disable everything under one shared cap; the operator's choices are kept for next boot."""
        self._closing = True
        for entry in self._entries.values():
            if entry.restart is not None:
                entry.restart.cancel()
        cap = self.settings.shutdown_cap_ms / 1000
        deadline = asyncio.get_running_loop().time() + cap
        running = [e for e in self._entries.values() if e.runtime is not None]

        async def one(entry: PluginEntry) -> None:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            enabled = entry.record.enabled
            await self.disable(entry.plugin_id, operator=False, budget=remaining)
            entry.record.enabled = enabled
            await self._persist(entry, intent=False)

        results = await asyncio.gather(*(one(e) for e in running), return_exceptions=True)
        for entry, result in zip(running, results, strict=True):
            if isinstance(result, BaseException):  # each failure is reported; shutdown goes on
                log.error("plugin %s: shutdown failed: %s", entry.plugin_id, describe_failure("shutdown", result),
                          exc_info=result)

