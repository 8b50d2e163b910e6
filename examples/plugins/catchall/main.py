"""Registers a handler for every hook event the host knows and records what it saw: per event, how
many times it fired and the last payload, in plugin storage under `seen:<event>`. It only observes
(no `hooks:modify`), so it changes nothing for anyone else.

Its ingress route `report` expects a JSON object; anything else makes its handler fail, which the
host reports back to this plugin as `ingress:error`."""

from plugbox.events import EVENTS
from plugbox.sdk import HookContext, Plugin


class CatchAll(Plugin):
    async def on_load(self, ctx):
        self.counts = {}
        for event in sorted(EVENTS):
            ctx.register_hook(event, self.record)
        ctx.register_webhook("report", self.report)

    async def record(self, hook: HookContext):
        count = self.counts.get(hook.event, 0) + 1
        self.counts[hook.event] = count
        await self.ctx.storage.set(f"seen:{hook.event}", {"count": count, "last": hook.data})
        return None

    async def report(self, request):
        body = request.get("json")
        if not isinstance(body, dict):
            raise ValueError("report: expected a JSON object")
        return {"status": 200, "body": {"seen": dict(sorted(self.counts.items()))}}
