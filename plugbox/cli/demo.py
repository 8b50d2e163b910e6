"""`plugbox demo`: the host on its embedded defaults (SQLite + loopback engine), the bundled
auto-reply built-in in-process, the example echo plugin confined in a worker, and a few injected
inbound messages — then what each tier did. Then the every-event scenario (`scenario`): the
catch-all example plugin, confined too, observes every hook event, and the demo prints what it saw.
Outbound webhooks go to an in-process receiver that refuses its first request (no network needed)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table

import plugbox
from plugbox.cli import scenario
from plugbox.engines.loopback import LoopbackEngine
from plugbox.events import EVENTS
from plugbox.host import Host
from plugbox.settings import load_settings

DEMO_KEY = "demo-key"  # the in-process API calls of the scenario; the demo serves no HTTP
EXAMPLES = Path(plugbox.__file__).resolve().parent.parent / "examples" / "plugins"
SESSION = "demo"
INBOUND = [
    ("15550001111@c.us", "hello there"),
    ("15550002222@c.us", "what are your opening hours?"),
    ("15550001111@c.us", "thanks!"),
]


def _layer(layer: Mapping[str, object]) -> str:
    if layer.get("skipped"):
        return f"{layer['name']} (not requested)"
    return str(layer["name"]) if layer.get("applied") else f"{layer['name']} (MISSING)"


class _Receiver:
    """A webhook receiver in the demo's own process: the first request fails (HTTP 503), so the
    demo shows a retry (`webhook:error`) before the delivery."""

    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, url: str, headers: dict[str, str], body: bytes) -> int:
        self.requests += 1
        return 503 if self.requests == 1 else 200


async def run_demo(data_dir: Path | None) -> int:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="plugbox-demo-") as tmp:
        settings = load_settings(data_dir=str(data_dir or tmp), api_keys=(DEMO_KEY,),
                                 webhook_backoff_initial_ms=20, webhook_backoff_max_ms=100)
        engine = LoopbackEngine()
        async with Host(settings, engine=engine, webhook_sender=_Receiver()) as host:
            await engine.create_session(SESSION)
            await host.set_active_sessions("auto-reply", [SESSION])
            await host.set_config("auto-reply", {"rules": [
                {"keyword": "hours", "reply": "We are open 9:00-17:00, Monday to Friday."},
                {"keyword": "hello", "reply": "Hi! Ask me about our hours."},
            ]})
            await host.enable("auto-reply")
            echo_dir = EXAMPLES / "echo"
            if echo_dir.is_dir():
                entry = host.load_plugin(echo_dir)
                await host.set_active_sessions(entry.plugin_id, [SESSION])
                try:
                    await host.enable(entry.plugin_id)
                except Exception as exc:
                    console.print(f"[yellow]sandboxed echo plugin did not start:[/] {exc}")
            for chat, body in INBOUND:
                await host.inject_inbound(SESSION, chat, body)  # waits for the observers too

            table = Table(title="Plugins")
            for col in ("id", "tier", "status", "confinement"):
                table.add_column(col)
            for e in host.plugins():
                layers = e.confinement
                conf = "in host process" if layers is None else ", ".join(_layer(x) for x in layers)
                table.add_row(e.plugin_id, "built-in" if e.builtin else "sandboxed", e.status, conf)
            console.print(table)

            sent = Table(title="Messages the loopback engine sent")
            for col in ("to", "body"):
                sent.add_column(col)
            for m in engine.sent:
                sent.add_row(m["chatId"], m["body"])
            console.print(sent)
            for e in host.plugins():
                for line in e.logs:
                    console.print(f"{e.plugin_id} [{line['level']}] {line['message']}", style="dim", markup=False)
            if not engine.sent:
                console.print("[red]no replies were sent: something is wrong[/]")
                return 1
            return await _every_event(console, host)
    return 0


async def _every_event(console: Console, host: Host) -> int:
    await scenario.every_event(host, "https://receiver.example/hook", api_key=DEMO_KEY, within=5.0)
    record = scenario.seen(host)
    table = Table(title="Hook events the confined catch-all plugin observed")
    table.add_column("event", no_wrap=True)
    table.add_column("times", no_wrap=True)
    table.add_column("last payload", overflow="ellipsis", max_width=44)
    for event in sorted(EVENTS):
        entry = record.get(event)
        last = "" if entry is None else _brief(entry["last"])
        table.add_row(event, "[red]never[/]" if entry is None else str(entry["count"]), last)
    console.print(table)
    missing = sorted(EVENTS - set(record))
    if missing:
        console.print(f"[red]events never observed: {', '.join(missing)}[/]")
        return 1
    console.print(f"all {len(EVENTS)} hook events observed")
    return 0


def _brief(data: object, width: int = 44) -> str:
    text = json.dumps(data, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 3] + "..."
