"""`plugbox dev run`: the plugin author's loop (SPEC §9), as a function the CLI and tests share.

Loads the plugin as untrusted with the same confinement as `serve`, enables it on a loopback
session, dispatches one event if asked, disables it, and reports everything an author needs:
status and error, the hook result, what the engine recorded as sent, stored keys, relayed logs
and the confinement layers applied. The report is honest: a plugin failure is reported, not
raised; only a failure of the host itself is an error.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from plugbox.lifecycle.status import Status
from plugbox.settings import Settings, load_settings
from plugbox.testing import PluginHarness, loopback_host

__all__ = ["dev_run"]


async def dev_run(
    plugin_dir: Path,
    *,
    event: str | None = None,
    data: Any = None,
    session: str = "dev",
    data_dir: Path | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    report: dict[str, Any] = {"plugin": {"id": None, "status": None, "error": None}, "hook": None,
                              "sent": [], "storage": {}, "logs": [], "confinement": None}
    with tempfile.TemporaryDirectory(prefix="plugbox-dev-") as tmp:
        # The operator's settings (so the same confinement as `serve`), on a data dir of its own.
        settings = msgspec.structs.replace(settings or load_settings(), data_dir=str(data_dir or tmp))
        async with loopback_host(settings, session) as host:
            try:
                pid = host.load_plugin(plugin_dir).plugin_id
            except Exception as exc:
                report["plugin"] = {"id": None, "status": "error", "error": str(exc)}
                return report
            await host.set_active_sessions(pid, [session])
            with contextlib.suppress(Exception):  # reported below from the plugin's status
                await host.enable(pid)
            plugin = PluginHarness(host, pid, session)
            report["confinement"] = plugin.confinement
            if event is not None and plugin.status == Status.ENABLED:
                outcome = await host.dispatch(event, data, session, source="dev")
                errors = [e for p, e in outcome.errors if p == pid]
                report["hook"] = {
                    "continue": not outcome.stopped,
                    "data": outcome.data,
                    "error": errors[0] if errors else None,
                    "timed_out": pid in outcome.timed_out,
                }
            view = plugin.view
            report["plugin"] = {"id": pid, "status": str(view.status), "error": view.error}
            if view.status == Status.ENABLED:
                await host.disable(pid)
            report["sent"] = plugin.sent
            report["storage"] = plugin.storage
            report["logs"] = plugin.logs
            report["plugin"]["final_status"] = str(plugin.status)
    return report
