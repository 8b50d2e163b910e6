"""The seam between the lifecycle manager and where a plugin's code runs.

A `PluginRuntime` exists while a plugin is enabled. The in-process runtime (built-ins) calls the
plugin object directly; the worker runtime (untrusted plugins) drives a confined process over the
bridge. The manager applies every budget around these calls, so a runtime never needs its own
lifecycle timeouts; it must however make `stop()` idempotent and safe after a crash.

This module knows neither the lifecycle's entry nor the bridge's zygote: a runtime sees its plugin
as a `PluginHandle` and spawns workers through a `WorkerSpawner`. It imports nothing of either side.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from plugbox.capabilities.router import CapabilityRouter
    from plugbox.hooks import HookBus
    from plugbox.logrelay import LogRelay
    from plugbox.manifest import Manifest
    from plugbox.permissions import SessionScope
    from plugbox.protocol import SpawnLimits
    from plugbox.settings import Settings
    from plugbox.totals.held import HeldTotal
    from plugbox.totals.rate import RateTotal

__all__ = ["FailureReport", "PluginHandle", "PluginRuntime", "RuntimeDeps", "RuntimeFactory", "WorkerSpawner"]


class PluginHandle(Protocol):
    """What a runtime may know about its plugin: identity, scope, config, log relay and the checks
    that guard registrations. (The capability router reads the same attributes as its `Caller`.)"""

    plugin_id: str
    permissions: Collection[str]
    manifest: Manifest
    logs: LogRelay

    @property
    def scope(self) -> SessionScope: ...

    @property
    def config(self) -> dict[str, Any]: ...

    def webhook_routes(self) -> list[str]: ...

    def check_webhook_route(self, route: str) -> None: ...

    def check_search_provider(self) -> None: ...


class PluginRuntime(Protocol):
    @property
    def confinement(self) -> list[dict[str, Any]] | None:
        """The confinement layers applied (name, applied, detail); None in the host process."""

    @property
    def pid(self) -> int | None:
        """The pid of the plugin's worker process while one runs; None in the host process."""

    async def start(self) -> None:
        """Make the plugin object exist (import `main`, instantiate the Plugin subclass)."""

    async def lifecycle(self, method: str) -> None:
        """Run on_load / on_enable / on_disable / on_unload."""

    async def config_changed(self, config: dict[str, Any]) -> None: ...

    async def health(self) -> dict[str, Any]: ...

    async def webhook(self, route: str, request: dict[str, Any]) -> dict[str, Any]: ...

    async def search(self, query: dict[str, Any]) -> Any: ...

    @property
    def has_search(self) -> bool:
        """Whether the plugin registered a search provider."""

    def hook_timed_out(self) -> None:
        """A hook of this plugin ran past its budget (a worker is then pinged for liveness)."""

    async def stop(self) -> None:
        """Release everything; idempotent."""


class WorkerSpawner(Protocol):
    """Starts confined worker processes (the bridge's zygote; its process type is the bridge's)."""

    async def spawn(self, plugin_id: str, plugin_dir: str, scratch_dir: str, limits: SpawnLimits) -> Any: ...

    async def close(self) -> None: ...


class FailureReport(Protocol):
    """A runtime's worker died or was killed: `counted` when the death ends a hook timeout already
    counted, `oom` when the kernel's OOM killer ended it (the reason says whose limit)."""

    def __call__(self, plugin: PluginHandle, reason: str, counted: bool = False, *, oom: bool = False) -> None: ...


@dataclass(slots=True)
class RuntimeDeps:
    settings: Settings
    bus: HookBus
    router: CapabilityRouter
    on_failure: FailureReport
    zygote: WorkerSpawner
    channel_cpu: RateTotal  # the host CPU all channels take together (one per host)
    channel_bytes: HeldTotal  # the host-wide books of the bytes worker channels keep (one per host)


RuntimeFactory = Callable[[PluginHandle, RuntimeDeps], PluginRuntime]
