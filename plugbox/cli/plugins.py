"""`plugbox plugins list|install|enable|disable|config`: a client of a running `plugbox serve`, over its
HTTP API. The server is `--url` (default from PLUGBOX_URL, else http://127.0.0.1:8787) and the key
`--api-key` (default from PLUGBOX_API_KEY). Errors print the server's `error` message and exit 1."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["plugins_app"]

plugins_app = typer.Typer(no_args_is_help=True, help="Manage the plugins of a running server.")

Url = Annotated[str, typer.Option("--url", envvar="PLUGBOX_URL", help="The server's base URL.")]
Key = Annotated[str | None, typer.Option("--api-key", envvar="PLUGBOX_API_KEY", help="API key (admin for changes).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the server's JSON answer.")]
DEFAULT_URL = "http://127.0.0.1:8787"
TIMEOUT_S = 60.0


def _call(url: str, key: str | None, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    headers = {"X-API-Key": key} if key else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        typer.echo(f"plugbox: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:500]}
    if response.is_error:
        message = body.get("error") if isinstance(body, dict) else None
        typer.echo(f"plugbox: {response.status_code}: {message or response.reason_phrase}", err=True)
        raise typer.Exit(1)
    return body


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def _table(plugins: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("id", "version", "status", "tier", "permissions", "sessions", "error / warnings")
    for p in plugins:
        # errors quote the plugin: the server escaped control characters; rich markup is ours to escape
        notes = [escape(p["error"])] if p.get("error") else []
        last = p.get("lastError")
        if last and last.get("message") != p.get("error"):
            notes.append(escape(f"last failure ({last['class']}): {last['message']}"))
        notes += [escape(f"warning: {w}") for w in p.get("warnings") or []]
        sessions = ", ".join(p["activeSessions"]) or ("[yellow]none[/]" if p.get("warnings") else "")
        table.add_row(p["id"], p["version"], p["status"], p["tier"], ", ".join(p["permissions"]), sessions,
                      "\n".join(notes))
    Console().print(table)


def _show(p: dict[str, Any]) -> None:
    _table([p])


@plugins_app.command("list")
def list_cmd(url: Url = DEFAULT_URL, api_key: Key = None, as_json: AsJson = False) -> None:
    """List the server's plugins."""
    doc = _call(url, api_key, "GET", "/api/plugins")
    _print_json(doc) if as_json else _table(doc["plugins"])


@plugins_app.command("install")
def install_cmd(
    zip_path: Annotated[Path, typer.Argument(help="The plugin zip (manifest.json at its root).")],
    url: Url = DEFAULT_URL, api_key: Key = None, as_json: AsJson = False,
) -> None:
    """Upload a plugin zip (installs, or updates a plugin with the same id)."""
    try:
        data = zip_path.read_bytes()
    except OSError as exc:
        typer.echo(f"plugbox: cannot read {zip_path}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    doc = _call(url, api_key, "POST", "/api/plugins", files={"file": (zip_path.name, data, "application/zip")})
    _print_json(doc) if as_json else _show(doc)


@plugins_app.command("enable")
def enable_cmd(plugin_id: str, url: Url = DEFAULT_URL, api_key: Key = None, as_json: AsJson = False) -> None:
    """Enable a plugin."""
    doc = _call(url, api_key, "POST", f"/api/plugins/{plugin_id}/enable")
    _print_json(doc) if as_json else _show(doc)


@plugins_app.command("disable")
def disable_cmd(plugin_id: str, url: Url = DEFAULT_URL, api_key: Key = None, as_json: AsJson = False) -> None:
    """Disable a plugin."""
    doc = _call(url, api_key, "POST", f"/api/plugins/{plugin_id}/disable")
    _print_json(doc) if as_json else _show(doc)


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            typer.echo(f"plugbox: --set {item!r}: expected KEY=VALUE", err=True)
            raise typer.Exit(2)
        try:
            out[key] = json.loads(raw)  # numbers, booleans, null, lists, objects
        except ValueError:
            out[key] = raw  # anything else is a string
    return out


@plugins_app.command("config")
def config_cmd(
    plugin_id: str,
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE (JSON or string); repeatable.")] = None,
    url: Url = DEFAULT_URL, api_key: Key = None, as_json: AsJson = False,
) -> None:
    """Show a plugin's config (secrets masked), or change keys with --set (other keys are kept)."""
    path = f"/api/plugins/{plugin_id}/config"
    doc = _call(url, api_key, "GET", path)
    if set_:
        config = {**doc["config"], **_parse_set(set_)}
        doc = _call(url, api_key, "PUT", path, json=config)
    if as_json:
        _print_json(doc)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("key", "value")
    for key, value in sorted(doc["config"].items()):
        table.add_row(key, json.dumps(value))
    Console().print(table)
