"""`plugbox plugins ingress list|create|delete PLUGIN`: a plugin's ingress instances on a running
server, over `/api/plugins/{id}/ingress/instances`. A secret given as `--secret FIELD` (without
`=VALUE`) is prompted for without echo, or read from stdin when piped, so that it stays out of the
shell history and the process list; the server never shows one back."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plugbox.cli.plugins import DEFAULT_URL, AsJson, Key, Url, _call, _console, _print_json

__all__ = ["ingress_app"]

ingress_app = typer.Typer(no_args_is_help=True, help="Manage a plugin's ingress instances (each with its own secrets).")


def _path(plugin_id: str) -> str:
    return f"/api/plugins/{plugin_id}/ingress/instances"


def _secrets(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not field:
            raise typer.BadParameter(f"{item!r}: expected FIELD or FIELD=VALUE", param_hint="--secret")
        out[field] = value if sep else typer.prompt(f"{field}", hide_input=True, err=True)
    return out


def _show(instances: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table("id", "session", "secrets", "routes")
    for i in instances:
        table.add_row(i["id"], i.get("sessionId") or "-", ", ".join(sorted(i["secrets"])),
                      "\n".join(i["routes"].values()))
    _console().print(table)


@ingress_app.command("list")
def list_cmd(plugin_id: str, url: Url = DEFAULT_URL, api_key: Key = None, as_json: AsJson = False) -> None:
    """List a plugin's ingress instances and the path of each route on them (secrets masked)."""
    doc = _call(url, api_key, "GET", _path(plugin_id))
    if as_json:
        _print_json(doc)
    else:
        _show(doc["instances"])


@ingress_app.command("create")
def create_cmd(
    plugin_id: str,
    secret: Annotated[list[str], typer.Option(
        "--secret", help="FIELD=VALUE, or FIELD to be prompted (stdin when piped); repeatable.")],
    instance_id: Annotated[str | None, typer.Option("--id", help="Instance id (default: generated).")] = None,
    session: Annotated[str | None, typer.Option("--session", help="Session its deliveries are for.")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    url: Url = DEFAULT_URL, api_key: Key = None, as_json: AsJson = False,
) -> None:
    """Create an ingress instance verified with its own secrets; prints the paths to give the sender."""
    doc: dict[str, Any] = {"secrets": _secrets(secret)}
    for key, value in (("id", instance_id), ("sessionId", session), ("description", description)):
        if value is not None:
            doc[key] = value
    created = _call(url, api_key, "POST", _path(plugin_id), json=doc)
    if as_json:
        _print_json(created)
    else:
        _show([created])


@ingress_app.command("delete")
def delete_cmd(plugin_id: str, instance_id: str, url: Url = DEFAULT_URL, api_key: Key = None) -> None:
    """Delete an ingress instance: its paths answer 404 from then on."""
    _call(url, api_key, "DELETE", f"{_path(plugin_id)}/{instance_id}")
    typer.echo(f"deleted ingress instance {instance_id} of {plugin_id}")
