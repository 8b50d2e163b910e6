"""Counts inbound messages per chat in plugin storage; answers "!count" with the chat's total."""

from plugbox.sdk import HookContext, Plugin


class Counter(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook: HookContext):
        message = hook.data
        if message.get("fromMe"):
            return None
        key = f"count:{message['chatId']}"
        total = await self.ctx.storage.get(key, 0) + 1
        await self.ctx.storage.set(key, total)
        if message.get("body", "").strip() == "!count":
            await self.ctx.messages.reply(hook.session_id, message["chatId"], message["id"],
                                          f"{total} messages in this chat so far")
        return None
