"""One known plugin as the lifecycle holds it: manifest, persisted record, log relay and, while it
runs, its runtime. Internal to the lifecycle package: everything outside reads a `PluginView`.

A runtime sees an entry only through `plugbox.runtime.PluginHandle` (identity, scope, logs, config
and the registration checks); the capability router reads the same attributes as its `Caller`.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Collection
from typing import Any

from plugbox.errors import CapabilityError, ConfigError
from plugbox.lifecycle.failures import Failure, FailureKind
from plugbox.lifecycle.registry import PluginRecord
from plugbox.lifecycle.status import Status
from plugbox.logrelay import LogRelay
from plugbox.manifest import Manifest
from plugbox.permissions import SessionScope, check_permission
from plugbox.runtime import PluginRuntime, RuntimeFactory
from plugbox.settings import Settings
from plugbox.totals.rate import RateTotal

__all__ = ["PluginEntry"]


class PluginEntry:
    """One known plugin: its manifest, persisted record and, while enabled, its runtime."""

    def __init__(self, manifest: Manifest, record: PluginRecord, factory: RuntimeFactory, settings: Settings,
                 on_log_line: Callable[[str, dict[str, Any]], None] | None = None,
                 log_total: RateTotal | None = None) -> None:
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
            bytes_per_minute=settings.log_bytes_per_minute,
            bytes_burst=settings.log_bytes_burst,
            total=log_total,
            on_line=on_log_line,
        )
        if record.error is not None:  # stored by a host that did not yet cap and redact it
            record.error = self.logs.sanitise(record.error)
        self._scope = self._make_scope()
        # Owned by the manager: the enable in flight, the disable in flight, the pending restart.
        self.enabling: asyncio.Future[None] | None = None
        self.disabling: asyncio.Task[None] | None = None
        self.restart: asyncio.Task[None] | None = None
        # Failure accounting, in this process only (the breaker's count is persisted, as this host's).
        self.started_at: float = 0.0  # clock time of the last successful (re)start
        self.handler_errors = 0  # consecutive, across all its handlers
        self.ingress_in_flight = 0  # its webhook handlers' requests not yet answered (lifecycle.ingress)
        self.failures: deque[Failure] = deque(maxlen=settings.recent_failures_kept)
        self.failure_counts: Counter[FailureKind] = Counter()

    @property
    def scope(self) -> SessionScope:
        return self._scope

    @property
    def builtin(self) -> bool:
        return self.record.source == "builtin"

    @property
    def status(self) -> Status:
        return Status(self.record.status)

    @property
    def error(self) -> str | None:
        return self.record.error

    @property
    def config(self) -> dict[str, Any]:
        return self.record.config

    @property
    def last_error(self) -> Failure | None:
        return self.failures[-1] if self.failures else None

    def note_failure(self, kind: FailureKind, message: str, at: float) -> Failure:
        """Record one failure (the manager's `_note` is the only caller). The message often quotes
        the plugin: it goes through the plugin's relay (capped, redacted, escaped) here, once."""
        failure = Failure(kind, self.logs.sanitise(message), at)
        self.failures.append(failure)
        self.failure_counts[kind] += 1
        return failure

    def set_status(self, status: Status, error: str | None = None) -> None:
        self.record.status = status
        # The reason often quotes the plugin (its exception text): stored and returned by the API,
        # so it goes through the plugin's relay (capped, redacted, escaped) once, here.
        self.record.error = self.logs.sanitise(error) if error is not None else None

    def _make_scope(self) -> SessionScope:
        return SessionScope(self.manifest.sessions, self.manifest.session_scoped, self.record.active_sessions)

    def set_active_sessions(self, sessions: list[str]) -> None:
        self.record.active_sessions = sessions
        self._scope = self._make_scope()

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
        if not self._scope.covers(session_id):
            return None
        overrides = record.session_config.get(session_id)
        return {**record.config, **overrides} if overrides else record.config

    def stored_config_problem(self) -> str | None:
        """Why the stored config (base, and each session's on top) does not satisfy the schema."""
        schema = self.manifest.config_schema
        if schema is None:
            return None
        try:
            schema.validate(self.record.config)
            for cfg in self.record.session_config.values():
                schema.validate({**self.record.config, **cfg})
        except ConfigError as exc:
            return f"config does not satisfy the plugin's configSchema: {exc}"
        return None

    def secret_values(self) -> list[str]:
        schema = self.manifest.config_schema
        if schema is None:
            return []
        out = list(schema.secret_values(self.record.config))
        for cfg in self.record.session_config.values():
            out.extend(schema.secret_values(cfg))
        return out

    def webhook_routes(self) -> list[str]:
        """The routes this plugin may register a handler for: its manifest ingress, and none
        without `webhook:ingress` (the one statement of the rule; a worker is sent the list)."""
        if "webhook:ingress" not in self.permissions:
            return []
        return [r.route for r in self.manifest.ingress]

    def check_webhook_route(self, route: str) -> None:
        check_permission(self.plugin_id, self.permissions, "webhook:ingress", "register_webhook")
        if route not in self.webhook_routes():
            raise CapabilityError(f"register_webhook: route {route!r} is not declared in the manifest ingress")

    def check_search_provider(self) -> None:
        check_permission(self.plugin_id, self.permissions, "search:provide", "register_search_provider")
