"""Run by test_host_death: a host with two confined plugins enabled; prints the pids of its zygote
and workers as one JSON line, then waits to be SIGKILLed."""

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.settings import load_settings

CODE = "from plugbox.sdk import Plugin\nclass P(Plugin):\n    pass\n"


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="plugbox-die-"))
    host = Host(load_settings(environ={}, data_dir=str(tmp / "data")), engine=LoopbackEngine(), bundled=False)
    await host.start(restore=False)
    pids = []
    for pid in ("a", "b"):
        d = tmp / "plugins" / pid
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps(
            {"id": pid, "name": pid, "version": "1", "type": "extension", "main": "main.py"}))
        (d / "main.py").write_text(CODE)
        d.chmod(0o755)
        entry = host.manager.get(host.load_plugin(d).plugin_id)
        await host.enable(pid)
        pids.append(entry.runtime.proc.pid)
    sys.stdout.write(json.dumps({"zygote": host.zygote.pid, "workers": pids}) + "\n")
    sys.stdout.flush()
    await asyncio.sleep(3600)


asyncio.run(main())
