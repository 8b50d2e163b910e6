"""`plugbox demo`: the host on its embedded defaults (SQLite + loopback engine), the bundled
auto-reply built-in in-process, the example echo plugin confined in a worker, and a few injected
inbound messages — then what each tier did."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table

import plugbox
from plugbox.engines.loopback import LoopbackEngine
from plugbox.host import Host
from plugbox.settings import load_settings

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


async def run_demo(data_dir: Path | None) -> int:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="plugbox-demo-") as tmp:
        settings = load_settings(data_dir=str(data_dir or tmp))
        engine = LoopbackEngine()
        async with Host(settings, engine=engine) as host:
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
                await engine.inject_inbound(SESSION, chat, body)

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
    return 0
