"""The base class a plugin's `main` module subclasses exactly once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plugbox.sdk._context import Context

__all__ = ["Plugin"]


class Plugin:
    """Subclass and override what you need; every method is optional and may be sync or async.

    `self.ctx` is set before `on_load` runs."""

    ctx: Context

    def on_load(self, ctx: Context) -> Any:
        return None

    def on_enable(self, ctx: Context) -> Any:
        return None

    def on_disable(self, ctx: Context) -> Any:
        return None

    def on_unload(self, ctx: Context) -> Any:
        return None

    def on_config_change(self, ctx: Context, config: dict[str, Any]) -> Any:
        return None

    def health_check(self) -> Any:
        return {"healthy": True, "message": "ok"}
