"""`PluginView`: an immutable snapshot of one plugin, as the host shows it to the API, the CLI,
metrics and the author kit. Secret config values are already masked; nothing in it reaches back
into the running plugin. Take a new view to see a later state."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from plugbox.lifecycle.failures import Failure
from plugbox.lifecycle.status import Status
from plugbox.manifest import Manifest

if TYPE_CHECKING:
    from collections.abc import Mapping

    from plugbox.lifecycle.entry import PluginEntry

__all__ = ["PluginView"]


@dataclass(frozen=True, slots=True)
class PluginView:
    plugin_id: str
    manifest: Manifest
    builtin: bool
    status: Status
    error: str | None
    enabled: bool  # the operator's choice, re-applied on boot
    active_sessions: tuple[str, ...]
    config: Mapping[str, Any]  # secrets masked
    session_config: Mapping[str, Mapping[str, Any]]  # each session's own overrides, secrets masked
    confinement: tuple[Mapping[str, Any], ...] | None  # None in the host process
    consecutive_failures: int
    worker_pid: int | None  # the confined worker's pid while one runs
    logs: tuple[Mapping[str, Any], ...]  # the relay's recent lines, oldest first
    logs_dropped: int  # lines (log calls, handler errors) refused by the plugin's own rate limit
    recent_failures: tuple[Failure, ...]  # every class (permission, handler, timeout, crash...), oldest first
    failure_counts: Mapping[str, int]  # by class, since this process loaded the plugin
    updated_at: float  # epoch seconds of this host's last write of the plugin's record or status

    @classmethod
    def of(cls, entry: PluginEntry) -> PluginView:
        record = entry.record
        schema = entry.manifest.config_schema

        def masked(config: dict[str, Any]) -> Mapping[str, Any]:
            return MappingProxyType(schema.mask(config) if schema is not None else dict(config))

        runtime = entry.runtime
        return cls(
            plugin_id=entry.plugin_id,
            manifest=entry.manifest,
            builtin=entry.builtin,
            status=entry.status,
            error=entry.error,
            enabled=record.enabled,
            active_sessions=tuple(record.active_sessions),
            config=masked(record.config),
            session_config=MappingProxyType({s: masked(c) for s, c in record.session_config.items()}),
            confinement=None if entry.confinement is None else tuple(
                MappingProxyType(dict(layer)) for layer in entry.confinement),
            consecutive_failures=record.consecutive_failures,
            worker_pid=runtime.pid if runtime is not None else None,
            logs=tuple(MappingProxyType(dict(line)) for line in entry.logs.recent),
            logs_dropped=entry.logs.dropped,
            recent_failures=tuple(entry.failures),
            failure_counts=MappingProxyType({str(k): n for k, n in entry.failure_counts.items()}),
            updated_at=record.updated_at,
        )

    @property
    def last_error(self) -> Failure | None:
        """The most recent failure of any class (None: none since the plugin was loaded)."""
        return self.recent_failures[-1] if self.recent_failures else None

    @property
    def warnings(self) -> tuple[str, ...]:
        """What an operator should know although nothing failed."""
        out = list(self.manifest.notes)
        if self.enabled and self.manifest.session_scoped and not self.active_sessions:
            out.append("enabled on no session: it receives no events and may act on no session; "
                       "activate it on a session (PUT /api/plugins/{id}/sessions)")
        return tuple(out)

    @property
    def permissions(self) -> tuple[str, ...]:
        return tuple(sorted(self.manifest.permissions))

    @property
    def degraded(self) -> bool:
        """Some confinement layer was neither applied nor deliberately skipped."""
        return any(not layer.get("applied") and not layer.get("skipped") for layer in self.confinement or ())

    def effective_config(self, session_id: str) -> Mapping[str, Any]:
        """The config a hook on `session_id` sees (the session's overrides on the base), masked."""
        return MappingProxyType({**self.config, **self.session_config.get(session_id, {})})
