"""Reading a fetch URL into the one `Target` every later check works from.

There is one URL parser (httpx's, the one the request is sent with) and one host grammar
(`plugbox.net.hosts`, shared with the manifest's `net.allow` and the exemption list): the allowlist,
the exemption list and the address check all compare the same canonical string, so no two parts of
plugbox can disagree about which host a URL names.

Rules: scheme http or https; no userinfo (`http://allowed@evil/` reads differently to people and to
parsers); no percent-encoding or zone id in the host; the host itself follows `plugbox.net.hosts`
(IDNs arrive here already punycoded by httpx). Ports are 1..65535, defaulting by scheme.

This module is pure: no I/O, no DNS.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import httpx

from plugbox.errors import TargetError
from plugbox.net.addresses import IPAddress, parse_ip_literal
from plugbox.net.hosts import canonical_host

__all__ = ["DEFAULT_PORTS", "Target", "parse_target"]

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Target:
    url: httpx.URL
    scheme: str
    host: str  # canonical: see `plugbox.net.hosts.canonical_host`
    ip: IPAddress | None  # set when the host is an IP literal
    port: int

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        return f"{host}:{self.port}"


def parse_target(url: str, schemes: tuple[str, ...] = ("http", "https")) -> Target:
    """Parse and check a fetch URL. Raises TargetError naming what is wrong."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise TargetError(f"invalid URL: {exc}", ip=_literal_behind(url)) from None
    if parsed.scheme not in schemes:
        raise TargetError(f"scheme {parsed.scheme!r} is not allowed (only {' or '.join(schemes)})")
    if parsed.userinfo:
        raise TargetError("credentials in the URL (user@host) are not allowed; send an Authorization header")
    raw_host = parsed.raw_host.decode("ascii", "replace")
    if not raw_host:
        raise TargetError("the URL has no host")
    if "%" in raw_host:
        raise TargetError(f"host {raw_host[:260]!r}: percent-encoding and zone ids are not allowed")
    host, ip = canonical_host(raw_host)
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[parsed.scheme]
    if not 1 <= port <= 65535:
        raise TargetError(f"port {port} is out of range 1..65535")
    return Target(url=parsed, scheme=parsed.scheme, host=host, ip=ip, port=port)


def _literal_behind(url: str) -> IPAddress | None:
    """When httpx refuses a URL, the address its host spells, if any (for a clearer refusal)."""
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
        return parse_ip_literal(host)
    except ValueError:
        return None
