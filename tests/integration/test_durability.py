"""Host crash durability (SPEC §8: an acknowledged `set` survives a host crash).

A host runs in a subprocess with confined plugins doing concurrent storage writes; it prints every
write as soon as the plugin has acknowledged it (the plugin's `await ctx.storage.set` returned and
its hook result came back with the key). The host is SIGKILLed mid-writes. Then the data dir is
opened by a new Host: every acknowledged write is there with its value, SQLite's integrity check
passes, and no worker or zygote of the old host survives. The host runs under a child-subreaper
wrapper (as in test_host_death.py), so its orphans are re-parented and reaped there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.settings import load_settings

from ._subreaper import PRELUDE, REAP

pytestmark = pytest.mark.timeout(90)

PLUGINS = 4
LANES = 3  # per plugin
KILL_AFTER_ACKS = 300

PLUGIN = """
from plugbox.sdk import HookResult, Plugin


class Writer(Plugin):
    def on_load(self, ctx):
        ctx.register_hook("webhook:before", self.write)

    async def write(self, hook):  # the key and value come and go in webhook:before's free-form payload.data
        asked = hook.data["payload"]["data"]
        await self.ctx.storage.set(asked["key"], asked["value"])
        return HookResult(data={**hook.data, "payload": {**hook.data["payload"],
                                                         "data": {"ack": asked["key"], "value": asked["value"]}}})
"""

# The host: prints its zygote and worker pids, then one line per acknowledged write, forever.
HOST = f"""
import asyncio, itertools, json, os, sys
from pathlib import Path

from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.settings import load_settings

PLUGIN = {PLUGIN!r}


def out(obj):
    os.write(1, (json.dumps(obj) + "\\n").encode())  # unbuffered: a line is out once acknowledged


async def lane(host, plugin_id, session, seq):
    while True:
        n = next(seq)
        key, value = f"k{{n:08d}}", f"{{plugin_id}}:{{n}}:" + "v" * (n % 50)
        payload = {{"id": key, "event": "t", "sessionId": session, "timestamp": "t",
                   "data": {{"key": key, "value": value}}}}
        outcome = await host.bus.execute("webhook:before", {{"deliveryId": key, "subscriptionId": "s", "event": "t",
                                                           "payload": payload}}, session)
        data = outcome.data["payload"]["data"]
        if isinstance(data, dict) and data.get("ack") == key and data.get("value") == value:
            out({{"p": plugin_id, "k": key, "v": value}})


async def main():
    root = Path(sys.argv[1])
    host = Host(load_settings(environ={{}}, data_dir=str(root / "data")), engine=LoopbackEngine(), bundled=False)
    await host.start(restore=False)
    workers = []
    for i in range({PLUGINS}):
        plugin_id, session = f"w{{i}}", f"s{{i}}"
        d = root / "plugins" / plugin_id
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({{"id": plugin_id, "name": plugin_id, "version": "1",
                                                     "type": "extension", "main": "main.py",
                                                     "permissions": ["storage:use", "hooks:modify"]}}))
        (d / "main.py").write_text(PLUGIN)
        d.chmod(0o755)
        await host.engine.create_session(session)
        host.load_plugin(d)
        await host.set_active_sessions(plugin_id, [session])
        await host.enable(plugin_id)
        workers.append(host.manager.get(plugin_id).runtime.proc.pid)
    out({{"zygote": host.zygote.pid, "workers": workers}})
    seqs = [itertools.count() for _ in range({PLUGINS})]
    await asyncio.gather(*(lane(host, f"w{{i}}", f"s{{i}}", seqs[i])
                           for i in range({PLUGINS}) for _ in range({LANES})))


asyncio.run(main())
"""

# The wrapper: a child subreaper that runs the host, reads acknowledged writes until enough have
# come, SIGKILLs the host mid-writes, reads what was already printed, and reaps the orphans.
REAPER = PRELUDE + REAP + r"""
host = subprocess.Popen([sys.executable, sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE, text=True)
info = json.loads(host.stdout.readline())
acks = []
while len(acks) < int(sys.argv[3]):
    line = host.stdout.readline()
    if not line:
        break
    acks.append(json.loads(line))
os.kill(host.pid, signal.SIGKILL)
for line in host.stdout:  # acknowledged before the kill: printed, so they count too
    try:
        acks.append(json.loads(line))
    except ValueError:
        pass  # a line cut by the kill was never acknowledged to anyone
host.wait()
print(json.dumps({**info, "acks": acks, "survivors": survivors([info["zygote"], *info["workers"]])}))
"""


@pytest.fixture
def crashed(tmp_path: Path) -> dict[str, Any]:
    """Run the host under the reaper until KILL_AFTER_ACKS writes are acknowledged, SIGKILL it;
    return its pids, every acknowledged write, and the survivors."""
    script = tmp_path / "host_writes.py"
    script.write_text(HOST)
    (tmp_path / "run").mkdir(mode=0o755)
    tmp_path.chmod(0o755)  # plugin dirs must be reachable by the uid a root-started worker drops to
    out = subprocess.run([sys.executable, "-c", REAPER, str(script), str(tmp_path / "run"), str(KILL_AFTER_ACKS)],
                         capture_output=True, text=True, timeout=80)
    assert out.returncode == 0, out.stderr[-3000:]
    info: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    info["data_dir"] = str(tmp_path / "run" / "data")
    return info


async def test_every_acknowledged_write_survives_a_sigkilled_host(crashed: dict[str, Any]) -> None:
    assert len(crashed["workers"]) == PLUGINS
    assert crashed["survivors"] == [], f"processes outlived the host: {crashed['survivors']}"
    acks = crashed["acks"]
    assert len(acks) >= KILL_AFTER_ACKS
    assert len({a["p"] for a in acks}) == PLUGINS  # the writes really were concurrent

    host = Host(load_settings(environ={}, data_dir=crashed["data_dir"]), engine=LoopbackEngine(), bundled=False)
    try:
        await host.start(restore=False)
        assert host.db.integrity_check()
        missing = [a for a in acks if host.storage.get(a["p"], a["k"]) != (True, a["v"])]
        assert missing == [], f"{len(missing)} of {len(acks)} acknowledged writes lost, e.g. {missing[:3]}"
    finally:
        await host.stop()
