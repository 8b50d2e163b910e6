"""Office hours: outside opening hours, answer each chat once per cooldown with an away message.

Ported from an OpenWA-style TypeScript plugin; docs/porting-from-openwa.md shows both side by side.
Time comes from the message's own `timestamp` (epoch seconds, set by the engine), so the plugin
needs no clock and no time-zone database: the opening hours are local to a fixed UTC offset.
"""

from datetime import UTC, datetime, timedelta

from plugbox.sdk import HookContext, Plugin


def is_open(at: datetime, config) -> bool:
    """Whether `at` (aware) falls in opening hours, in the configured offset's local time."""
    local = at.astimezone(UTC) + timedelta(minutes=int(config["utcOffsetMinutes"]))
    if local.weekday() >= 5 and not config["openOnWeekends"]:
        return False
    return int(config["openHour"]) <= local.hour < int(config["closeHour"])


class OfficeHours(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook: HookContext):
        message = hook.data
        if message.get("fromMe") or not message.get("body") or message["chatId"].endswith("@g.us"):
            return None
        config = hook.config  # this session's config: its overrides on the base
        sent_at = datetime.fromtimestamp(message["timestamp"], UTC)
        if is_open(sent_at, config):
            return None
        key = f"answered:{hook.session_id}:{message['chatId']}"
        last = await self.ctx.storage.get(key)
        if last is not None and message["timestamp"] - last < int(config["cooldownMinutes"]) * 60:
            return None
        await self.ctx.messages.send_text(hook.session_id, message["chatId"], config["message"])
        await self.ctx.storage.set(key, message["timestamp"])
        self.ctx.logger.info("away message sent", chat=message["chatId"])
        return None

    def health_check(self):
        c = self.ctx.config
        return {"healthy": int(c["openHour"]) < int(c["closeHour"]),
                "message": f"open {c['openHour']}:00-{c['closeHour']}:00 at UTC{int(c['utcOffsetMinutes']):+d} min"}
