"""`plugbox plugins list|show|install|uninstall|enable|disable|config|sessions|logs` (and `ingress`,
in `plugbox.cli.ingress`, with the helpers here): a client of a
running `plugbox serve`, over its HTTP API. The server is `--url` (default from PLUGBOX_URL, else
http://127.0.0.1:8787) and the key `--api-key` (default from PLUGBOX_API_KEY, else the first key of the
server's own PLUGBOX_ADMIN_API_KEYS, so the shell that exported it for `serve` can drive the CLI as well).
Errors print the server's `error` message and exit 1; a 401/403 also names the key variable."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    import httpx

__all__ = ["plugins_app"]

plugins_app = typer.Typer(no_args_is_help=True, help="Manage the plugins of a running server.")

Url = Annotated[str, typer.Option("--url", envvar="PLUGBOX_URL", help="The server's base URL.")]
KEY_VARIABLE = "PLUGBOX_API_KEY"
SERVER_KEYS_VARIABLE = "PLUGBOX_ADMIN_API_KEYS"
Key = Annotated[str | None, typer.Option(
    "--api-key", envvar=KEY_VARIABLE,
    help=f"API key (admin for changes); default ${KEY_VARIABLE}, else the first of ${SERVER_KEYS_VARIABLE}.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the server's JSON answer.")]
DEFAULT_URL = "http://127.0.0.1:8787"
TIMEOUT_S = 60.0
KEY_HINT = (f"set {KEY_VARIABLE} (or {SERVER_KEYS_VARIABLE}, as exported for `plugbox serve`) "
            "or pass --api-key; changes need an admin key")


def _key(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    first = os.environ.get(SERVER_KEYS_VARIABLE, "").split(",")[0].strip()
    return first or None


def _call(url: str, key: str | None, method: str, path: str, *, progress: str | None = None, **kwargs: Any) -> Any:
    """One API call; `progress` is shown on stderr (a spinner on a terminal) while it runs."""
    import httpx

    key = _key(key)
    headers = {"X-API-Key": key} if key else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S) as client, _progress(progress):
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        typer.echo(f"plugbox: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    body = _body(response)
    if response.is_error:
        _refused(response, body)
    return body


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"error": response.text[:500]}


def _refused(response: httpx.Response, body: Any) -> NoReturn:
    """Print the server's error (and, for a key problem, which variable to set); exit 1."""
    message = body.get("error") if isinstance(body, dict) else None
    typer.echo(f"plugbox: {response.status_code}: {message or response.reason_phrase}", err=True)
    if response.status_code in (401, 403):
        typer.echo(f"hint: {KEY_HINT}", err=True)
    raise typer.Exit(1)


@contextlib.contextmanager
def _progress(message: str | None) -> Iterator[None]:
    if message is None:
        yield
        return
    console = _console(stderr=True)
    if console.is_terminal:
        with console.status(message):
            yield
    else:
        console.print(message)
        yield


def _console(*, stderr: bool = False) -> Any:
    """A rich console; when not a terminal (piped, redirected) it is wide enough never to cut an id."""
    from rich.console import Console

    out = sys.stderr if stderr else sys.stdout
    return Console(file=out, width=None if out.isatty() else 1000)


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def _table(plugins: list[dict[str, Any]]) -> None:
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
    _console().print(table)


def _show(p: dict[str, Any]) -> None:
    _table([p])


@plugins_app.command("list")
def list_cmd(url: Url = DEFAULT_URL, api_key: Key = None, as_json: AsJson = False) -> None:
    """List the server's plugins."""
    doc = _call(url, api_key, "GET", "/api/plugins")
    _print_json(doc) if as_json else _table(doc["plugins"])


@plugins_app.command("install")
def install_cmd(
    source: Annotated[str, typer.Argument(
        help="The plugin zip (manifest.json at its root), or an http(s) URL the server fetches it from.")],
    sha256: Annotated[str | None, typer.Option(
        "--sha256", help="With a URL: the archive's expected SHA-256 (hex); any other bytes are refused.")] = None,
    url: Url = DEFAULT_URL, api_key: Key = None, as_json: AsJson = False,
) -> None:
    """Install a plugin zip, or have the server fetch one from a URL (installs, or updates a plugin
    with the same id)."""
    if source.startswith(("http://", "https://")):
        body: dict[str, Any] = {"url": source} if sha256 is None else {"url": source, "sha256": sha256}
        doc = _call(url, api_key, "POST", "/api/plugins", json=body, progress=f"the server is fetching {source}...")
        _print_json(doc) if as_json else _show(doc)
        return
    if sha256 is not None:
        typer.echo("plugbox: --sha256 applies to a URL; a local zip is uploaded as it is", err=True)
        raise typer.Exit(2)
    zip_path = Path(source)
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
    doc = _call(url, api_key, "POST", f"/api/plugins/{plugin_id}/enable",
                progress=f"enabling {plugin_id}: waiting for its worker to load...")
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
    from rich.table import Table

    table = Table("key", "value")
    for key, value in sorted(doc["config"].items()):
        table.add_row(key, json.dumps(value))
    _console().print(table)


@plugins_app.command("show")
def show_cmd(plugin_id: str, url: Url = DEFAULT_URL, api_key: Key = None, as_json: AsJson = False) -> None:
    """Show one plugin: status, sessions, last error, health."""
    doc = _call(url, api_key, "GET", f"/api/plugins/{plugin_id}")
    if as_json:
        _print_json(doc)
        return
    _show(doc)  # the table already shows the last failure
    for label, value in (("description", doc.get("description")), ("health", json.dumps(doc.get("health")))):
        if value:
            _console().print(f"{label}: {value}", markup=False)


@plugins_app.command("uninstall")
def uninstall_cmd(plugin_id: str, url: Url = DEFAULT_URL, api_key: Key = None, as_json: AsJson = False) -> None:
    """Uninstall a plugin (stops it and removes its directory; built-ins cannot be uninstalled)."""
    doc = _call(url, api_key, "DELETE", f"/api/plugins/{plugin_id}", progress=f"uninstalling {plugin_id}...")
    if as_json:
        _print_json(doc)
    else:
        typer.echo(f"uninstalled {plugin_id}")


@plugins_app.command("sessions")
def sessions_cmd(
    plugin_id: str,
    sessions: Annotated[list[str] | None, typer.Argument(help="Make exactly these sessions active.")] = None,
    url: Url = DEFAULT_URL, api_key: Key = None, as_json: AsJson = False,
) -> None:
    """Show the sessions a plugin is active on, or set them (a session-scoped plugin does nothing without one)."""
    path = f"/api/plugins/{plugin_id}/sessions"
    if sessions:
        doc = _call(url, api_key, "PUT", path, json={"activeSessions": sessions})
    else:
        doc = _call(url, api_key, "GET", path)
    if as_json:
        _print_json(doc)
        return
    active = doc.get("activeSessions", [])
    typer.echo(f"active: {', '.join(active) if active else '(none)'}")
    if "allowed" in doc:
        typer.echo(f"allowed: {', '.join(doc['allowed']) or '(any)'}")


def _log_line(line: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(float(line.get("ts", 0))))
    return f"{stamp} {str(line.get('level', '')).upper():7} {line.get('message', '')}"


@plugins_app.command("logs")
def logs_cmd(
    plugin_id: str,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Then print new lines and failures as they happen (Ctrl-C stops).")] = False,
    url: Url = DEFAULT_URL, api_key: Key = None,
) -> None:
    """Print a plugin's recent log lines (what the server keeps), and with --follow the new ones as they come."""
    if not follow:
        for line in _call(url, api_key, "GET", f"/api/plugins/{plugin_id}").get("logs", []):
            typer.echo(_log_line(line))
        return
    try:
        _follow(url, api_key, plugin_id)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _follow(url: str, key: str | None, plugin_id: str) -> None:
    """The server's live stream for one plugin (`/api/events?plugin=ID`): its recent lines, then every
    new line and failure as it happens, with nothing lost between the two, until the server ends it.
    Its keepalives arrive well within the read timeout, so a silent server is noticed."""
    import httpx
    from httpx_sse import SSEError, connect_sse

    key = _key(key)
    headers = {"X-API-Key": key} if key else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S) as client, \
                connect_sse(client, "GET", "/api/events", params={"plugin": plugin_id}) as source:
            if source.response.is_error:
                source.response.read()
                _refused(source.response, _body(source.response))
            for event in source.iter_sse():
                data = json.loads(event.data) if event.data else {}
                if event.event == "log":
                    typer.echo(_log_line(data))
                elif event.event == "failure":
                    typer.echo(f"{time.strftime('%H:%M:%S')} FAILURE {data.get('class', '?')}")
                elif event.event == "dropped":
                    typer.echo(f"plugbox: {data.get('count', '?')} events dropped: this reader fell behind", err=True)
    except (httpx.HTTPError, SSEError) as exc:
        typer.echo(f"plugbox: lost the live stream from {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("plugbox: the server ended the live stream", err=True)
