"""Receives signed alerts on POST /ingress/ingress-webhook/alert and posts them to a chat.
The host verifies the HMAC signature and timestamp before this code ever sees the request."""

from plugbox.sdk import Plugin


class IngressWebhook(Plugin):
    async def on_load(self, ctx):
        ctx.register_webhook("alert", self.on_alert)

    async def on_alert(self, request):
        alert = request.get("json")
        if not isinstance(alert, dict) or not isinstance(alert.get("text"), str):
            return {"status": 400, "body": {"error": "expected a JSON object with a 'text' string"}}
        config = self.ctx.config
        if not config.get("chatId"):
            return {"status": 503, "body": {"error": "no chatId configured"}}
        sent = await self.ctx.messages.send_text(config["sessionId"], config["chatId"], "ALERT: " + alert["text"])
        return {"status": 202, "body": {"messageId": sent["id"]}}
