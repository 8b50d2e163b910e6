"""Hosts as the plugin lifecycle names and reports them. Owns two things:

- this host's name among hosts sharing a database (`Settings.host_id`), which its per-host plugin
  status rows are keyed by and other hosts see it as: the operator's setting if given, else one
  made once and kept in the data directory, so a restarted host finds its own rows again instead
  of appearing as a new host;
- `plugin_hosts`: what each host last observed of one plugin, marked live or not, as the API shows
  it. It decides nothing about the plugin.
"""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Collection
from dataclasses import dataclass

from plugbox.errors import ConfigError
from plugbox.lifecycle.registry import Registry
from plugbox.lifecycle.status import Status
from plugbox.lifecycle.view import PluginView
from plugbox.settings import HOST_ID_PATTERN, Settings

__all__ = ["FILE_NAME", "HostReport", "host_id", "plugin_hosts"]

FILE_NAME = "host-id"
_VALID = re.compile(HOST_ID_PATTERN)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SUFFIX_HEX = 6  # two hosts on one machine (or cloned images) still get different names


def host_id(settings: Settings) -> str:
    """The setting if set; else the name kept in `<data_dir>/host-id`, written on first use."""
    if settings.host_id:
        return settings.host_id
    path = settings.data_path / FILE_NAME
    try:
        kept = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        kept = ""
    if kept:
        if not _VALID.match(kept):
            raise ConfigError("host_id", f"{path} holds {kept!r}, not a valid host id")
        return kept
    base = _UNSAFE.sub("-", socket.gethostname()).strip("-._") or "host"
    made = f"{base[:48 - _SUFFIX_HEX - 1]}-{secrets.token_hex(_SUFFIX_HEX // 2)}"
    path.write_text(made + "\n", encoding="utf-8")
    return made


@dataclass(frozen=True, slots=True)
class HostReport:
    """What one host last observed of one plugin. `live`: the host is up now (this one, or one
    holding its lease connection on the shared database); a host that is not may have stopped,
    died or lost the database, and its row is only its last word."""

    host: str
    status: Status
    error: str | None
    consecutive_failures: int
    updated_at: float
    live: bool
    this: bool  # the host answering


def plugin_hosts(view: PluginView, registry: Registry, live: Collection[str]) -> list[HostReport]:
    """Every host's last observation of `view`'s plugin, by host id. This host's comes from `view`
    (its memory, which a stored row may trail by a write); the others' from their rows."""
    own = HostReport(registry.host_id, view.status, view.error, view.consecutive_failures, view.updated_at,
                     live=True, this=True)
    others = [HostReport(s.host, s.status, s.error, s.consecutive_failures, s.updated_at,
                         live=s.host in live, this=False)
              for s in registry.hosts(view.plugin_id) if s.host != registry.host_id]
    return sorted([own, *others], key=lambda r: r.host)
