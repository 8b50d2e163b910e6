"""The seam between the lifecycle manager and where a plugin's code runs.

A `PluginRuntime` exists while a plugin is enabled. The in-process runtime (built-ins) calls the
plugin object directly; the worker runtime (untrusted plugins) drives a confined process over the
bridge. The manager applies every budget around these calls, so a runtime never needs its own
lifecycle timeouts; it must however make `stop()` idempotent and safe after a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from plugbox.bridge.process import Zygote
    from plugbox.capabilities.router import CapabilityRouter
    from plugbox.hooks import HookBus
    from plugbox.loader import PluginEntry
    from plugbox.settings import Settings

__all__ = ["PluginRuntime", "RuntimeDeps", "RuntimeFactory"]


class PluginRuntime(Protocol):
    @property
    def confinement(self) -> list[dict[str, Any]] | None:
        """The confinement layers applied (name, applied, detail); None in the host process."""

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


@dataclass(slots=True)
class RuntimeDeps:
    settings: Settings
    bus: HookBus
    router: CapabilityRouter
    # (entry, reason, counted): counted when the death ends a hook timeout already counted
    on_failure: Callable[[PluginEntry, str, bool], None]
    zygote: Zygote


RuntimeFactory = Callable[["PluginEntry", RuntimeDeps], PluginRuntime]
