"""The bundled auto-reply extension: keyword → reply rules from its config. A trusted built-in: it
runs in the host process, through the same `ctx` and permission checks as any plugin."""

from __future__ import annotations

from typing import Any

from plugbox.sdk import HookContext, Plugin

__all__ = ["MANIFEST", "AutoReply"]

MANIFEST: dict[str, Any] = {
    "id": "auto-reply",
    "name": "Auto reply",
    "version": "1.0.0",
    "type": "extension",
    "main": "builtin",
    "permissions": ["messages:send"],
    "sessions": ["*"],
    "sessionScoped": True,
    "configSchema": {
        "type": "object",
        "properties": {
            "rules": {
                "type": "array",
                "title": "Rules",
                "description": "Each rule: keyword (matched case-insensitively as a whole word) and reply.",
                "default": [],
                "items": {
                    "type": "object",
                    "properties": {
                        "keyword": {"type": "string"},
                        "reply": {"type": "string"},
                    },
                },
            },
            "ignoreFromMe": {"type": "boolean", "default": True},
        },
    },
    "hooks": ["message:received"],
}


def match_rule(rules: list[dict[str, Any]], body: str) -> str | None:
    words = {w.strip(".,!?;:").lower() for w in body.split()}
    for rule in rules:
        keyword = str(rule.get("keyword", "")).lower()
        if keyword and keyword in words:
            return str(rule.get("reply", ""))
    return None


class AutoReply(Plugin):
    async def on_load(self, ctx: Any) -> None:
        ctx.register_hook("message:received", self.on_message, priority=500)

    async def on_message(self, hook: HookContext) -> None:
        message = hook.data
        if not isinstance(message, dict) or hook.session_id is None:
            return None
        if message.get("fromMe") and hook.config.get("ignoreFromMe", True):
            return None
        reply = match_rule(list(hook.config.get("rules", [])), str(message.get("body", "")))
        if reply:
            await self.ctx.messages.reply(hook.session_id, message["chatId"], message["id"], reply)
        return None
