"""Host lists: the plugin's effective fetch allowlist, and the operator's exemption list.

Entry syntax (both lists, and the manifest's `net.allow`): `*` (any host), or an entry of the one
host grammar `plugbox.net.hosts`: `host` (any port), `host:port` (that port only), `[v6]`,
`[v6]:port`, or a bare IPv6 address. Hosts are compared canonical, so `127.1`, `0x7f000001` and
`127.0.0.1` are one entry.

The effective allowlist of a plugin (SPEC §8) is its manifest `net.allow` plus, for every config
field named in `net.allowConfigHosts`, the host of its value when that value is an `https://` URL.
Such a host is allowed at the URL's port only (explicit, or 443): the operator configured an https
endpoint, not the whole machine. `net.fetch` carries no session, so the config values taken are the
base config and every per-session config: a host any of them names is allowed for the plugin.
Values that are not https URLs, or do not parse, add nothing.

This module is pure: no I/O, no DNS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from plugbox.errors import TargetError
from plugbox.net.hosts import parse_entry
from plugbox.net.urls import parse_target

__all__ = ["HostList", "NetRules", "config_hosts", "effective_allowlist"]


class NetRules(Protocol):
    """The manifest's `net` section (`plugbox.manifest.NetPolicy`), as this module reads it. A
    protocol, not an import: the manifest checks `net.allow` with this package's host grammar, so
    importing the manifest here would close a cycle."""

    @property
    def allow(self) -> tuple[str, ...]: ...

    @property
    def allow_config_hosts(self) -> tuple[str, ...]: ...


class HostList:
    """A set of `(host, port or None)` rules, or everything (`*`)."""

    __slots__ = ("any_host", "rules")

    def __init__(self, rules: Iterable[tuple[str, int | None]] = (), *, any_host: bool = False) -> None:
        self.rules = frozenset(rules)
        self.any_host = any_host

    @classmethod
    def parse(cls, entries: Iterable[str]) -> HostList:
        """Read entries in the syntax above. Raises TargetError (a ValueError) naming the bad entry."""
        rules: list[tuple[str, int | None]] = []
        any_host = False
        for entry in entries:
            if entry == "*":
                any_host = True
                continue
            rules.append(parse_entry(entry))
        return cls(rules, any_host=any_host)

    def permits(self, host: str, port: int) -> bool:
        """`host` must already be canonical."""
        return self.any_host or (host, None) in self.rules or (host, port) in self.rules

    def __or__(self, other: HostList) -> HostList:
        return HostList(self.rules | other.rules, any_host=self.any_host or other.any_host)

    def __repr__(self) -> str:
        shown = ["*"] if self.any_host else []
        shown += sorted(f"{h}:{p}" if p is not None else h for h, p in self.rules)
        return f"HostList({shown!r})"


def config_hosts(net: NetRules, configs: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """`(host, port)` of every https URL found in the `allowConfigHosts` fields of `configs`."""
    found: list[tuple[str, int]] = []
    for config in configs:
        for path in net.allow_config_hosts:
            value = _lookup(config, path)
            if not isinstance(value, str):
                continue
            try:
                target = parse_target(value, schemes=("https",))
            except TargetError:
                continue
            found.append((target.host, target.port))
    return found


def effective_allowlist(net: NetRules, configs: Iterable[Mapping[str, Any]]) -> HostList:
    """The manifest allowlist plus the hosts of the configured https endpoints."""
    manifest = HostList.parse(net.allow)
    return manifest | HostList(config_hosts(net, configs))


def _lookup(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for name in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value
