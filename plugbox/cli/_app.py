"""Command registration. Commands import their heavy dependencies lazily, so `plugbox --help`
stays fast."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from plugbox.cli.ingress import ingress_app
from plugbox.cli.plugins import plugins_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help="plugbox: a sandboxed plugin host.")
dev_app = typer.Typer(no_args_is_help=True, help="Plugin author tools.")
app.add_typer(dev_app, name="dev")
app.add_typer(plugins_app, name="plugins")
plugins_app.add_typer(ingress_app, name="ingress")


def _print_version(value: bool) -> None:
    if value:
        from plugbox import __version__

        typer.echo(f"plugbox {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """plugbox: a sandboxed plugin host."""


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
    watch: Annotated[bool, typer.Option("--watch", help="Run again whenever a file in PLUGIN_DIR changes "
                                                        "(Ctrl-C stops).")] = False,
) -> None:
    """Load PLUGIN_DIR as untrusted (fully confined), enable it, dispatch one event, disable it, report.

    Exit codes: 0 the plugin loaded and the host ran (whatever the hook did); 1 the plugin could not
    be loaded or enabled; 2 usage error (unknown event, bad --data); 3 the host itself failed.
    With --watch: one report per run (with --json, one JSON object per line), and the exit code of
    the last run when Ctrl-C stops it."""
    from plugbox.devrun import EXIT_USAGE, empty_report, finish

    payload: Any = None
    if data is not None:
        try:
            payload = json.loads(data)
        except json.JSONDecodeError as exc:  # a usage error: nothing to watch for
            raise typer.Exit(_print_dev_report(finish(empty_report(), EXIT_USAGE,
                                                      f"--data is not valid JSON: {exc}"), as_json)) from None

    def run_once() -> int:
        return _print_dev_report(_dev_run_report(plugin_dir, event, payload, session, data_dir), as_json)

    if not watch:
        raise typer.Exit(run_once())
    from plugbox.devwatch import plugin_changes, watch_runs

    def announce(paths: set[str]) -> None:
        names = ", ".join(sorted(os.path.relpath(p, plugin_dir) for p in paths))
        typer.echo(f"plugbox dev run: changed: {names}; running again", err=True)

    typer.echo(f"plugbox dev run: watching {plugin_dir} (Ctrl-C stops)", err=True)
    raise typer.Exit(watch_runs(run_once, plugin_changes(plugin_dir), announce))


def _dev_run_report(plugin_dir: Path, event: str | None, payload: Any, session: str,
                    data_dir: Path | None) -> dict[str, Any]:
    from plugbox.devrun import EXIT_HOST, dev_run, empty_report, finish

    try:
        report: dict[str, Any] = run_async(dev_run(plugin_dir, event=event, data=payload, session=session,
                                                   data_dir=data_dir))
    except Exception as exc:  # dev_run reports every failure it knows; this is a bug in plugbox
        report = finish(empty_report(), EXIT_HOST, f"the host failed: {type(exc).__name__}: {exc}")
    return report


def _print_dev_report(report: dict[str, Any], as_json: bool) -> int:
    from plugbox.cli.report import print_dev_report

    if as_json:
        sys.stdout.write(json.dumps(report, default=str) + "\n")
        sys.stdout.flush()
    else:
        print_dev_report(report)
        if report["reason"]:
            typer.echo(f"plugbox dev run: {report['reason']}", err=True)
    code: int = report["exit_code"]
    return code


@app.command()
def bench(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Small N for a CI smoke run.")] = False,
    plugins: Annotated[int | None, typer.Option("--plugins", help="Plugins in the scale test (default 200).")] = None,
    skip_node: Annotated[bool, typer.Option("--skip-node", help="Do not run the Node worker_threads anchor.")] = False,
    placement: Annotated[str, typer.Option(
        help="split: each pair's two sides (host/worker, and both anchors alike) on two CPUs; "
             "same: everything on one CPU (software cost only); free: wherever the scheduler puts them.")] = "split",
    scenario: Annotated[str, typer.Option(
        help="full: every measured phase beside its anchors; chaos: fault injection under load (20 plugins); "
             "soak: steady load, watching host RSS and fds for drift (10 plugins); "
             "neighbours: a victim plugin probed beside each attack class of a hostile one; "
             "cluster: 3 hosts on one PostgreSQL database (PLUGBOX_DATABASE_URL), throughput, failover, "
             "lost writes.")] = "full",
    duration: Annotated[float | None, typer.Option(
        help="Seconds to run --scenario chaos (default 60), soak (default 600), cluster (default 30) or "
             "neighbours (per attack class, default 8).")] = None,
    attack: Annotated[list[str] | None, typer.Option(
        help="With --scenario neighbours: run only this attack class (repeatable).")] = None,
    report_dir: Annotated[Path | None, typer.Option(
        "--report", help="Also write the run as a self-contained HTML page with charts: DIR/index.html "
                         "(and DIR/report.json).")] = None,
) -> None:
    """Measure the sandbox tier (fully confined workers) beside anchors measured in the same run."""
    from plugbox.bench import BenchError, BenchOptions, run_bench

    try:
        options = BenchOptions.make(quick=quick, plugins=plugins, skip_node=skip_node, placement=placement,
                                    scenario=scenario, duration=duration, attacks=tuple(attack or ()))
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if report_dir is not None and options.scenario != "full":
        typer.echo("--report: only with the full bench (no --scenario)", err=True)
        raise typer.Exit(2)
    try:
        report = run_async(run_bench(options, progress=lambda msg: typer.echo(f"bench: {msg}", err=True)))
    except KeyboardInterrupt:
        typer.echo("bench: interrupted; everything it started has been stopped", err=True)
        raise typer.Exit(130) from None
    except BenchError as exc:
        typer.echo(f"bench failed: {exc}", err=True)
        raise typer.Exit(1) from None
    if report_dir is not None:
        from plugbox.bench.htmlreport import write_report

        typer.echo(f"bench: report written to {write_report(report, report_dir)}", err=True)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        from plugbox.bench.table import print_report

        print_report(report)


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="The plugin's id, also its directory name (lower-case).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to create it.")] = Path("."),
) -> None:
    """Scaffold a plugin: manifest, main module and a test that passes (run it with `plugbox test DIR`)."""
    from plugbox.scaffold import scaffold

    try:
        root = scaffold(name, directory)
    except (ValueError, FileExistsError) as exc:
        typer.echo(f"plugbox new: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"created {root}; run its tests with: {_this_command()} test {root}")


def _this_command() -> str:
    """How the user ran plugbox, so the printed command works as typed (`.venv/bin/plugbox` in a clone)."""
    import shutil

    argv0 = sys.argv[0]
    on_path = shutil.which("plugbox")
    if on_path and Path(on_path).resolve() == Path(argv0).resolve():
        return "plugbox"
    return argv0 if Path(argv0).name == "plugbox" else f"{sys.executable} -m plugbox"


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def test(
    ctx: typer.Context,
    plugin_dir: Annotated[Path, typer.Argument(help="The plugin directory (its pytest.ini and tests/).")] = Path("."),
) -> None:
    """Run a plugin's tests with pytest from plugbox's own interpreter (where plugbox.testing and
    pytest-asyncio are installed); extra arguments go to pytest."""
    import subprocess

    if not plugin_dir.is_dir():
        typer.echo(f"plugbox test: {plugin_dir} is not a directory", err=True)
        raise typer.Exit(2)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *ctx.args]
    raise typer.Exit(subprocess.call(cmd, cwd=plugin_dir))


@app.command()
def pack(
    plugin_dir: Annotated[Path, typer.Argument(help="The plugin directory (manifest.json + main).")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="The zip to write (default: ID-VERSION.zip).")] = None,
) -> None:
    """Build an installable zip of PLUGIN_DIR, leaving out what .plugboxignore (gitignore-style) names and
    tests/, caches, virtualenvs and dotfiles; refuses, writing nothing, what the installer would refuse."""
    from plugbox.errors import ConfigError, ManifestError, ZipRefused
    from plugbox.lifecycle.pack import pack as pack_zip
    from plugbox.settings import load_settings

    if not (plugin_dir / "manifest.json").is_file():
        typer.echo(f"plugbox pack: {plugin_dir} has no manifest.json", err=True)
        raise typer.Exit(2)
    try:
        settings = load_settings()
        if output is None:
            doc = json.loads((plugin_dir / "manifest.json").read_text(encoding="utf-8"))
            output = Path(f"{doc.get('id', plugin_dir.name)}-{doc.get('version', '0')}.zip")
        files = pack_zip(plugin_dir, output, settings)
    except (ConfigError, ManifestError, ZipRefused, ValueError, OSError) as exc:
        typer.echo(f"plugbox pack: refused: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"packed {len(files)} files into {output}")


@app.command()
def doctor(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Report each confinement layer: available on this kernel, and what the policy would do."""
    from plugbox.cli.report import print_doctor
    from plugbox.settings import load_settings

    print_doctor(load_settings(), as_json)


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file (else PLUGBOX_CONFIG).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Listen port (default: settings.port).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Listen address (default 127.0.0.1).")] = None,
) -> None:
    """Run the host with its HTTP API (SQLite + the configured engine). Stops cleanly on SIGINT/SIGTERM."""
    from plugbox.cli.serve import serve as run_server
    from plugbox.errors import ConfigError
    from plugbox.settings import load_settings

    overrides: dict[str, Any] = {k: v for k, v in (("port", port), ("host", host)) if v is not None}
    try:
        settings = load_settings(config, **overrides)
    except ConfigError as exc:
        typer.echo(f"plugbox serve: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run_async(run_server(settings)))
