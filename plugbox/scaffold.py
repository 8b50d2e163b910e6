"""`plugbox new NAME`: a plugin package with a manifest, a main module and a passing test. NAME is both
the directory and the plugin id, so it must already be a lower-case id: the installer places a plugin
in a directory named by its id, and a directory that differs from its id is a second copy on update."""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["scaffold"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

MAIN = '''"""{name}: replies to "ping" with "pong" and counts the pings it answered."""

from plugbox.sdk import HookContext, Plugin


class {cls}(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook: HookContext):
        message = hook.data
        if message.get("fromMe") or message.get("body", "").strip().lower() != "ping":
            return None
        await self.ctx.messages.send_text(hook.session_id, message["chatId"], "pong")
        await self.ctx.storage.set("pings", await self.ctx.storage.get("pings", 0) + 1)
        self.ctx.logger.info("answered a ping", chat=message["chatId"])
        return None
'''

TEST = '''from pathlib import Path

from plugbox.testing import run_plugin

PLUGIN = Path(__file__).resolve().parent.parent


async def test_ping_gets_pong():
    async with run_plugin(PLUGIN) as plugin:
        await plugin.inbound("ping")
        assert [m["body"] for m in plugin.sent] == ["pong"]
        assert plugin.storage == {"pings": 1}


async def test_other_messages_get_no_reply():
    async with run_plugin(PLUGIN) as plugin:
        await plugin.inbound("hello")
        assert plugin.sent == []


async def test_runs_fully_confined():
    async with run_plugin(PLUGIN) as plugin:
        assert plugin.status == "enabled"
        assert all(layer["applied"] for layer in plugin.confinement if not layer.get("skipped"))
'''

PYTEST_INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
testpaths = tests
"""


def scaffold(name: str, parent: Path) -> Path:
    if _NAME.match(name.lower()) and name != name.lower():
        raise ValueError(f"plugin name {name!r}: the name is the plugin's id and directory, and ids are "
                         f"lower-case; use {name.lower()!r}")
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    root = parent / name
    if root.exists():
        raise FileExistsError(f"{root} already exists")
    cls = "".join(part.capitalize() for part in re.split(r"[._-]", name) if part) or "MyPlugin"
    if not cls[0].isalpha():
        cls = "Plugin" + cls
    (root / "tests").mkdir(parents=True)
    manifest = {
        "id": name, "name": name, "version": "0.1.0", "type": "extension", "main": "main.py",
        "sdkVersion": "1", "permissions": ["messages:send", "storage:use"], "sessions": ["*"],
        "hooks": ["message:received"],
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (root / "main.py").write_text(MAIN.format(name=name, cls=cls))
    (root / "tests" / f"test_{re.sub(r'[^a-z0-9]', '_', name)}.py").write_text(TEST)
    (root / "pytest.ini").write_text(PYTEST_INI)
    for path in (root, root / "tests"):
        path.chmod(0o755)
    return root
