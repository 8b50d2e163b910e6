"""The plugins the suite runs, as source text written into its temporary plugins directory.

They are ordinary untrusted plugins: loaded from disk, confined like any other, reaching the host
only through the bridge. Each does the least that its metric needs, so what is measured is the
bridge and the host, not plugin code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "ACK",
    "CAP_EVENT",
    "CARRY",
    "COUNTER",
    "COUNT_EVENT",
    "DISPATCH_EVENT",
    "KEY",
    "PROBE",
    "VALUE",
    "carried",
    "carrying",
    "counting",
    "install",
]

# Events the bench's host does not fire on its own (it subscribes no webhook and simulates no
# receipt), so only the bench's own dispatches reach the handlers. A handler's answer must fit its
# event's payload (plugbox.payloads) and needs `hooks:modify`: free-form data travels in
# webhook:before's `payload.data`, the count in the text of a message:sending.
CAP_EVENT = "webhook:before"  # drives the in-plugin capability round-trip loop
DISPATCH_EVENT = "message:ack"  # the single confined sync handler for hook dispatch
COUNT_EVENT = "message:sending"  # the scale test's one hook, answered by every plugin
ACK = {"messageId": "bench-1", "status": "delivered", "ack": 2}  # a message:ack payload

# A plugin's helper: answer a webhook:before with `value` as its carried data.
CARRY = """
from plugbox.sdk import HookResult

def carry(hook, value):
    return HookResult(data={**hook.data, "payload": {**hook.data["payload"], "data": value}})
"""


def carrying(value: Any, session: str) -> dict[str, Any]:
    """A webhook:before payload carrying `value` (the one free-form field of any hook payload)."""
    envelope = {"id": "bench", "event": "bench", "sessionId": session, "timestamp": "1970-01-01T00:00:00Z",
                "data": value}
    return {"deliveryId": "bench", "subscriptionId": "bench", "event": "bench", "payload": envelope}


def carried(data: Any) -> Any:
    """The value a chain left in a `carrying` payload (None when the data is not one)."""
    payload = data.get("payload") if isinstance(data, dict) else None
    return payload.get("data") if isinstance(payload, dict) else None


def counting(n: int, session: str) -> dict[str, Any]:
    """A message:sending payload whose text is the count `n`."""
    return {"sessionId": session, "input": {"chatId": "15550001111@c.us", "text": str(n)}, "type": "text"}

KEY = "bench:key"
VALUE = "v" * 64

# Metric 1 and 2/3. `cap_rtt` times each `await ctx.storage.get(...)` with perf_counter_ns inside the
# worker and returns the raw latencies as its hook result; `noop` is a plain sync handler (the
# worker answers it inline, without a task).
PROBE = CARRY + f'''
import time

from plugbox.sdk import Plugin

KEY = {KEY!r}
VALUE = {VALUE!r}


class Probe(Plugin):
    def on_load(self, ctx):
        ctx.register_hook({CAP_EVENT!r}, self.cap_rtt)
        ctx.register_hook({DISPATCH_EVENT!r}, self.noop)

    async def cap_rtt(self, hook):
        get = self.ctx.storage.get
        clock = time.perf_counter_ns
        n = hook.data["payload"]["data"]["n"]
        lat = [0] * n
        for i in range(n):
            t0 = clock()
            await get(KEY)
            lat[i] = clock() - t0
        if await get(KEY) != VALUE:  # the calls really reached storage
            raise RuntimeError("storage.get returned the wrong value")
        return carry(hook, {{"lat": lat}})

    def noop(self, hook):
        return None
'''

# Metrics 4 to 6: a minimal realistic plugin (registers one hook when loaded). Its handler adds one
# to the count in the text of the send, so the final data of the chain says how many plugins answered.
COUNTER = f'''
from plugbox.sdk import HookResult, Plugin


class Counter(Plugin):
    def on_load(self, ctx):
        ctx.register_hook({COUNT_EVENT!r}, self.count)

    def count(self, hook):
        asked = hook.data["input"]
        return HookResult(data={{**hook.data, "input": {{**asked, "text": str(int(asked["text"]) + 1)}}}})
'''


def install(
    plugins_dir: Path, plugin_id: str, source: str, permissions: list[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write one plugin directory, readable by the unprivileged uid a root-started worker drops to.
    `extra` adds manifest fields (net, configSchema...)."""
    root = plugins_dir / plugin_id
    root.mkdir(parents=True)
    manifest = {
        "id": plugin_id,
        "name": plugin_id,
        "version": "1.0.0",
        "type": "extension",
        "main": "main.py",
        "permissions": permissions,
        **(extra or {}),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "main.py").write_text(source)
    os.chmod(root, 0o755)
    for name in ("manifest.json", "main.py"):
        os.chmod(root / name, 0o644)
    return root
