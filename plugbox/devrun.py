"""`plugbox dev run`: the plugin author's loop (SPEC §9), as a function the CLI and tests share.

Loads the plugin as untrusted with the same confinement as `serve`, enables it on a loopback
session, dispatches one event if asked, disables it, and reports everything an author needs:
status and error, the hook result, what the engine recorded as sent, stored keys (large values
summarised), relayed logs and the confinement layers applied. A `message:received` event is first
stored in the loopback engine as an inbound message (so a reply to it works), then dispatched.

The report always says how the run ended, as `exit_code` and `reason`:

    0  EXIT_OK      the plugin loaded and the host ran correctly, whatever the hook did
    1  EXIT_PLUGIN  the plugin could not be loaded or enabled (`reason` says why)
    2  EXIT_USAGE   unknown event, bad data for it
    3  EXIT_HOST    the host itself failed

A plugin failure is reported, never raised; nothing here raises but a bug in the report itself.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from plugbox.errors import EngineError
from plugbox.events import EVENTS
from plugbox.host import Host
from plugbox.lifecycle.status import Status
from plugbox.settings import Settings, load_settings
from plugbox.testing import PluginHarness, loopback_host

__all__ = ["EXIT_HOST", "EXIT_OK", "EXIT_PLUGIN", "EXIT_USAGE", "dev_run", "empty_report", "finish"]

EXIT_OK, EXIT_PLUGIN, EXIT_USAGE, EXIT_HOST = 0, 1, 2, 3
# A stored value whose JSON form is longer than this is shown as a one-line summary (the report is
# for reading; the value itself stays in the plugin's storage).
STORED_VALUE_SHOWN_CHARS = 1024


def empty_report() -> dict[str, Any]:
    return {"exit_code": EXIT_OK, "reason": None, "plugin": {"id": None, "status": None, "error": None},
            "hook": None, "sent": [], "storage": {}, "logs": [], "confinement": None}


def finish(report: dict[str, Any], exit_code: int, reason: str | None) -> dict[str, Any]:
    report["exit_code"], report["reason"] = exit_code, reason
    return report


def usage_problem(event: str | None, data: Any) -> str | None:
    """Why `--event`/`--data` cannot be run, or None."""
    if event is None:
        return None
    if event not in EVENTS:
        return f"unknown event {event!r}; known events: {', '.join(sorted(EVENTS))}"
    if event == "message:received" and not (
            isinstance(data, dict) and isinstance(data.get("chatId"), str) and isinstance(data.get("body"), str)):
        return 'message:received needs --data with string "chatId" and "body" (and "sender" in a group)'
    return None


def _summarised(value: Any) -> Any:
    text = json.dumps(value, default=str)
    if len(text) <= STORED_VALUE_SHOWN_CHARS:
        return value
    return f"<{type(value).__name__}, {len(text)} characters as JSON: {text[:80]}...>"


async def dev_run(
    plugin_dir: Path,
    *,
    event: str | None = None,
    data: Any = None,
    session: str = "dev",
    data_dir: Path | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    report = empty_report()
    problem = usage_problem(event, data)
    if problem is not None:
        return finish(report, EXIT_USAGE, problem)
    try:
        with tempfile.TemporaryDirectory(prefix="plugbox-dev-") as tmp:
            # The operator's settings (so the same confinement as `serve`), on a data dir of its own.
            settings = msgspec.structs.replace(settings or load_settings(), data_dir=str(data_dir or tmp))
            async with loopback_host(settings, session) as host:
                await _run(host, report, plugin_dir, event, data, session)
    except Exception as exc:  # not the plugin's doing: everything the plugin can do is caught in _run
        return finish(report, EXIT_HOST, f"the host failed: {type(exc).__name__}: {exc}")
    return report


async def _run(host: Host, report: dict[str, Any], plugin_dir: Path, event: str | None, data: Any,
               session: str) -> None:
    try:
        pid = host.load_plugin(plugin_dir).plugin_id
    except Exception as exc:  # ManifestError, a missing or unreadable directory
        report["plugin"] = {"id": None, "status": "error", "error": str(exc)}
        finish(report, EXIT_PLUGIN, f"the plugin could not be loaded: {exc}")
        return
    await host.set_active_sessions(pid, [session])
    with contextlib.suppress(Exception):  # reported below from the plugin's status
        await host.enable(pid)
    plugin = PluginHarness(host, pid, session)
    report["confinement"] = plugin.confinement
    if plugin.status != Status.ENABLED:
        finish(report, EXIT_PLUGIN, f"the plugin could not be enabled: {plugin.error}")
    elif event is not None:
        try:
            outcome = await _dispatch(host, event, data, session)
        except EngineError as exc:
            finish(report, EXIT_USAGE, f"the loopback engine refused the message: {exc}")
        else:
            errors = [e for p, e in outcome.errors if p == pid]
            report["hook"] = {"continue": not outcome.stopped, "data": outcome.data,
                              "error": errors[0] if errors else None, "timed_out": pid in outcome.timed_out}
    view = plugin.view
    report["plugin"] = {"id": pid, "status": str(view.status), "error": view.error}
    if view.status == Status.ENABLED:
        await host.disable(pid)
    report["sent"] = plugin.sent
    report["storage"] = {k: _summarised(v) for k, v in plugin.storage.items()}
    report["logs"] = plugin.logs
    report["plugin"]["final_status"] = str(plugin.status)


async def _dispatch(host: Host, event: str, data: Any, session: str) -> Any:
    """Run the chain once. `message:received` goes through the loopback engine, which stores the
    message first (its id is then one the engine knows, so `reply` to it works)."""
    if event != "message:received":
        return await host.dispatch(event, data, session, source="dev")
    outcomes: list[Any] = []

    async def received(session_id: str, message: dict[str, Any]) -> None:
        outcomes.append(await host.dispatch(event, {**data, **message}, session_id, source="dev"))

    engine = host.loopback
    engine.on_inbound = received  # this run's own engine: the outcome is read here, not by the host
    await engine.inject_inbound(session, data["chatId"], data["body"], sender=data.get("sender"))
    return outcomes[0]
