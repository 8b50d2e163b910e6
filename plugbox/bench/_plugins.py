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

__all__ = ["CAP_EVENT", "COUNTER", "COUNT_EVENT", "DISPATCH_EVENT", "KEY", "PROBE", "VALUE", "install"]

# Events the loopback engine never fires by itself, so only the bench's own dispatches reach the
# handlers (accepted data on all three: the bus checks shapes only on message:received/sent and
# webhook:before).
CAP_EVENT = "webhook:queued"  # drives the in-plugin capability round-trip loop
DISPATCH_EVENT = "message:ack"  # the single confined sync handler for hook dispatch
COUNT_EVENT = "message:deleted"  # the scale test's one hook, answered by every plugin

KEY = "bench:key"
VALUE = "v" * 64

# Metric 1 and 2/3. `cap_rtt` times each `await ctx.storage.get(...)` with perf_counter_ns inside the
# worker and returns the raw latencies as its hook result; `noop` is a plain sync handler (the
# worker answers it inline, without a task).
PROBE = f'''
import time

from plugbox.sdk import HookResult, Plugin

KEY = {KEY!r}
VALUE = {VALUE!r}


class Probe(Plugin):
    def on_load(self, ctx):
        ctx.register_hook({CAP_EVENT!r}, self.cap_rtt)
        ctx.register_hook({DISPATCH_EVENT!r}, self.noop)

    async def cap_rtt(self, hook):
        get = self.ctx.storage.get
        clock = time.perf_counter_ns
        n = hook.data["n"]
        lat = [0] * n
        for i in range(n):
            t0 = clock()
            await get(KEY)
            lat[i] = clock() - t0
        if await get(KEY) != VALUE:  # the calls really reached storage
            raise RuntimeError("storage.get returned the wrong value")
        return HookResult(data={{"lat": lat}})

    def noop(self, hook):
        return None
'''

# Metrics 4 to 6: a minimal realistic plugin (registers one hook when loaded). Its handler adds one
# to a counter in the hook data, so the final data of the chain says how many plugins answered.
COUNTER = f'''
from plugbox.sdk import HookResult, Plugin


class Counter(Plugin):
    def on_load(self, ctx):
        ctx.register_hook({COUNT_EVENT!r}, self.count)

    def count(self, hook):
        return HookResult(data={{"n": hook.data["n"] + 1}})
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
