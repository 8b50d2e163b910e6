"""Human-readable output of the CLI (rich tables)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plugbox.logrelay import escape_controls
from plugbox.settings import Settings

console = Console()


def _layers_table(layers: list[dict[str, Any]] | None, title: str = "Confinement") -> Table:
    table = Table(title=title)
    table.add_column("layer")
    table.add_column("applied")
    table.add_column("detail")
    for layer in layers or []:
        ok = layer.get("applied")
        shown = "[dim]off[/]" if layer.get("skipped") else "[green]yes[/]" if ok else "[red]no[/]"
        table.add_row(str(layer.get("name")), shown, str(layer.get("detail", "")))
    return table


def _plain(value: Any) -> str:
    """Plugin text for the terminal: no control characters and no rich markup of its own."""
    return escape(escape_controls(str(value)))


def print_dev_report(report: dict[str, Any]) -> None:
    p = report["plugin"]
    if p.get("id") is None and p.get("status") is None:  # stopped before the plugin was loaded
        return
    status = p.get("final_status") or p.get("status")
    console.print(f"[bold]plugin[/] {p.get('id')}  status: {p.get('status')} → {status}")
    if p.get("error"):
        console.print(f"[red]error:[/] {_plain(p['error'])}")
    if report.get("hook") is not None:
        console.print(f"[bold]hook result[/] {_plain(json.dumps(report['hook'], default=str))}")
    console.print(f"[bold]sent[/] ({len(report['sent'])})")
    for m in report["sent"]:
        console.print(f"  → {_plain(m.get('chatId'))}: {_plain(m.get('body'))}")
    console.print(f"[bold]storage[/] {_plain(json.dumps(report['storage'], default=str))}")
    console.print(f"[bold]logs[/] ({len(report['logs'])})")
    for line in report["logs"]:
        console.print(f"  [{line['level']}] {line['message']}", markup=False)
    console.print(_layers_table(report.get("confinement")))


def _required(layer: str, settings: Settings) -> bool:
    """Whether this policy makes a worker fail without `layer` (opt-in and best-effort ones do not)."""
    if layer == "namespaces":
        return settings.use_netns
    if layer == "cgroups":  # "auto" starts workers without groups where the host cannot make them
        return settings.worker_cgroups == "required"
    if layer == "userns":  # likewise: "auto" lets workers share a non-root host's uid
        return settings.worker_uids == "required"
    # scratch is best effort: without root, workers start with scratch bounded per file only
    return layer != "scratch"


def print_doctor(settings: Settings, as_json: bool) -> None:
    import msgspec

    from plugbox.bridge.process import spawn_limits
    from plugbox.confine import cgroups, probe

    request = cgroups.Request(**msgspec.structs.asdict(spawn_limits(settings).cgroup))
    found = [cgroups.probe_for(settings.cgroup_parent, request) if p.name == cgroups.NAME else p for p in probe()]
    probes = [{"name": p.name, "available": p.available, "detail": p.detail} for p in found]
    strict = settings.confinement == "strict"
    missing = [p.name for p in found if not p.available and _required(p.name, settings)]
    verdict = (
        "plugins start fully confined"
        if not missing
        else ("plugins will NOT start (strict policy): missing " + ", ".join(missing))
        if strict
        else ("plugins start DEGRADED, missing " + ", ".join(missing))
    )
    if as_json:
        sys.stdout.write(json.dumps({"policy": settings.confinement, "layers": probes, "verdict": verdict}) + "\n")
        return
    table = Table(title=f"plugbox doctor — policy: {settings.confinement}")
    table.add_column("layer")
    table.add_column("available")
    table.add_column("detail")
    for p in found:
        table.add_row(p.name, "[green]yes[/]" if p.available else "[red]no[/]", p.detail)
    console.print(table)
    console.print(verdict)
