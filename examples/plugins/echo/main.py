"""Echo bot: answers every inbound text with the same text, and counts what it echoed."""

from plugbox.sdk import HookContext, Plugin


class Echo(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message, priority=100)

    async def on_message(self, hook: HookContext):
        message = hook.data
        if message.get("fromMe"):
            return None
        prefix = hook.config.get("prefix", "echo: ")
        await self.ctx.messages.send_text(hook.session_id, message["chatId"], prefix + message["body"])
        count = await self.ctx.storage.get("echoed", 0)
        await self.ctx.storage.set("echoed", count + 1)
        self.ctx.logger.info("echoed", chat=message["chatId"])
        return None
