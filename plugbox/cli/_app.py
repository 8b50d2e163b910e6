"""Command registration. Commands import their heavy dependencies lazily, so `plugbox --help`
stays fast."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="plugbox: a sandboxed plugin host.")
dev_app = typer.Typer(no_args_is_help=True, help="Plugin author tools.")
app.add_typer(dev_app, name="dev")


def run_async(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


@app.command()
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="Keep the demo's data here (default: a temp dir).")] = None,
) -> None:
    """Run the host on the embedded defaults with a few injected messages, and print the outcome."""
    from plugbox.cli.demo import run_demo

    raise typer.Exit(run_async(run_demo(data_dir)))


@dev_app.command("run")
def dev_run_cmd(
    plugin_dir: Annotated[Path, typer.Argument(help="The plugin directory (manifest.json + main).")],
    event: Annotated[str | None, typer.Option(help="Dispatch this hook event once.")] = None,
    data: Annotated[str | None, typer.Option(help="The event's data, as JSON.")] = None,
    session: Annotated[str, typer.Option(help="The loopback session to run on.")] = "dev",
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default: a temp dir).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Load PLUGIN_DIR as untrusted (fully confined), enable it, dispatch one event, disable it, report."""
    from plugbox.cli.report import print_dev_report
    from plugbox.devrun import dev_run

    payload: Any = None
    if data is not None:
        try:
            payload = json.loads(data)
        except json.JSONDecodeError as exc:
            typer.echo(f"--data is not valid JSON: {exc}", err=True)
            raise typer.Exit(2) from None
    report = run_async(dev_run(plugin_dir, event=event, data=payload, session=session, data_dir=data_dir))
    if as_json:
        sys.stdout.write(json.dumps(report, default=str) + "\n")
    else:
        print_dev_report(report)


@app.command()
def doctor(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Report each confinement layer: available on this kernel, and what the policy would do."""
    from plugbox.cli.report import print_doctor
    from plugbox.settings import load_settings

    print_doctor(load_settings(), as_json)
