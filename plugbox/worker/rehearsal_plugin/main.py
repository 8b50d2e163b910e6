"""The plugin the zygote rehearses a worker's conversation with (plugbox/worker/rehearsal.py).

Ours, not a user's: it does what a small plugin does first (registers a handler, logs, answers a
hook with rewritten data) so that every path a real worker takes first has been taken once before
the zygote forks.
"""

from __future__ import annotations

from typing import Any

from plugbox.sdk import Context, HookContext, HookResult, Plugin


class Rehearsal(Plugin):
    def on_load(self, ctx: Context) -> None:
        ctx.register_hook("message:sending", self.on_sending)

    def on_enable(self, ctx: Context) -> None:
        ctx.logger.info("rehearsal enabled")

    def on_sending(self, hook: HookContext) -> HookResult:
        return HookResult(data={**hook.data, "rehearsed": True})

    async def health_check(self) -> Any:
        return {"healthy": True, "message": ""}
