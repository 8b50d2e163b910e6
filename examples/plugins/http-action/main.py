"""Forwards messages starting with "/ask " to an HTTP endpoint (config `endpoint`, whose host is
allowed through `allowConfigHosts`) and replies with the endpoint's answer."""

import json

from plugbox.sdk import CapabilityError, HookContext, Plugin


class HttpAction(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook: HookContext):
        message = hook.data
        body = message.get("body", "")
        endpoint = hook.config.get("endpoint")
        if message.get("fromMe") or not body.startswith("/ask ") or not endpoint:
            return None
        headers = {"content-type": "application/json"}
        if hook.config.get("apiToken"):
            headers["authorization"] = "Bearer " + hook.config["apiToken"]
        try:
            response = await self.ctx.net.fetch(endpoint, method="POST", headers=headers,
                                                body=json.dumps({"question": body[5:]}), timeout_ms=5000)
            answer = json.loads(response["body"])["answer"] if response["ok"] else f"error {response['status']}"
        except (CapabilityError, ValueError, KeyError) as exc:
            self.ctx.logger.warning("ask failed", error=str(exc))
            answer = "sorry, the service is not reachable"
        await self.ctx.messages.reply(hook.session_id, message["chatId"], message["id"], answer)
        return None
