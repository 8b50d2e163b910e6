"""Reading a fetch URL into the one `Target` every later check works from.

There is one URL parser (httpx's, the one the request is sent with) and one host spelling
(`canonical_host`): the allowlist, the exemption list and the address check all compare the same
canonical string, so no two parts of plugbox can disagree about which host a URL names.

Rules: scheme http or https; no userinfo (`http://allowed@evil/` reads differently to people and to
parsers); a host that is an IP literal in any notation is read as that address (`addresses`); any
other host must be an ASCII DNS name (IDNs arrive here already punycoded by httpx), at most 253
characters, labels of letters, digits, `-` and `_`, not ending in a numeric label; one trailing dot is
dropped. Ports are 1..65535, defaulting by scheme.

This module is pure: no I/O, no DNS.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

import httpx

from plugbox.net.addresses import IPAddress, LiteralIPError, parse_ip_literal

__all__ = ["DEFAULT_PORTS", "Target", "TargetError", "canonical_host", "parse_target"]

DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", re.ASCII)


class TargetError(ValueError):
    """The URL or host is not acceptable; the message says why. `ip` is set when the host was an
    IP literal that httpx's parser refused (e.g. `0177.0.0.1`), so the caller can name the address."""

    def __init__(self, message: str, ip: IPAddress | None = None) -> None:
        super().__init__(message)
        self.ip = ip


@dataclass(frozen=True, slots=True)
class Target:
    url: httpx.URL
    scheme: str
    host: str  # canonical: see `canonical_host`
    ip: IPAddress | None  # set when the host is an IP literal
    port: int

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        return f"{host}:{self.port}"


def canonical_host(host: str) -> tuple[str, IPAddress | None]:
    """(canonical spelling, address if `host` is an IP literal). Raises TargetError.

    Literals become their standard form (`0x7f.1` -> `127.0.0.1`, IPv6 compressed, no brackets);
    names become lower-case without a trailing dot."""
    try:
        ip = parse_ip_literal(host)
    except LiteralIPError as exc:
        raise TargetError(str(exc)) from None
    if ip is not None:
        return str(ip), ip
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
        try:
            ip = parse_ip_literal(name)
        except LiteralIPError as exc:
            raise TargetError(str(exc)) from None
        if ip is not None:
            return str(ip), ip
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise TargetError(f"{host[:260]!r} is not a valid host name")
    if labels[-1].isdigit():
        raise TargetError(f"{host[:260]!r} ends in a numeric label: neither a name nor an address")
    return name, None


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
