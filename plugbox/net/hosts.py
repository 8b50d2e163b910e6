"""The one host-name grammar of plugbox: how a host, and a `host:port` list entry, are spelled.

Three places read hosts and must never disagree about which host a text names: the manifest's
`net.allow`, the operator's exemption list (`fetch_exempt_hosts`) and the host of a fetch URL. All
three call this module, so a host accepted in one is accepted in the others and compares equal.

A host is an IP literal in any notation a C resolver reads as an address (`addresses`), or an ASCII
DNS name (IDNs in punycode): at most 253 characters, labels of letters, digits, `-` and `_` (service
names such as `my_svc.internal` have underscores), not ending in a numeric label (that is a
malformed address, not a name); one trailing dot is dropped. Its canonical spelling is lower-case,
IP literals in their standard form (`0x7f.1` -> `127.0.0.1`, IPv6 compressed, no brackets).

A list entry is `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; ports are 1..65535.
`*` (any host) is the lists' business, not the grammar's. Entries print canonical with
`format_entry` (IPv6 in brackets), the form the manifest stores and the API shows.

This module is pure: no I/O, no DNS.
"""

from __future__ import annotations

import re

from plugbox.errors import TargetError
from plugbox.net.addresses import IPAddress, parse_ip_literal

__all__ = ["canonical_entry", "canonical_host", "format_entry", "parse_entry"]

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)


def canonical_host(host: str) -> tuple[str, IPAddress | None]:
    """(canonical spelling, address if `host` is an IP literal). Raises TargetError naming `host`."""
    ip = parse_ip_literal(host)
    if ip is not None:
        return str(ip), ip
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
        ip = parse_ip_literal(name)
        if ip is not None:
            return str(ip), ip
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise TargetError(f"{host[:260]!r} is not a valid host name (use punycode for IDNs)")
    if labels[-1].isdigit():
        raise TargetError(f"{host[:260]!r} ends in a numeric label: neither a name nor an address")
    return name, None


def parse_entry(entry: str) -> tuple[str, int | None]:
    """(canonical host, port or None) of one list entry. Raises TargetError naming the entry."""
    if "/" in entry or "@" in entry:
        raise TargetError(f"{entry[:260]!r} must be a host or host:port, not a URL")
    port_text: str | None = None
    if entry.startswith("["):
        inner, closed, rest = entry[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise TargetError(f"{entry[:260]!r} is not '[ipv6]' or '[ipv6]:port'")
        host, port_text = f"[{inner}]", (rest[1:] if rest else None)
    elif entry.count(":") > 1:  # a bare IPv6 literal: no port possible without brackets
        host = entry
    else:
        host, sep, after = entry.partition(":")
        port_text = after if sep else None
    try:
        canonical, _ = canonical_host(host)
    except TargetError as exc:
        raise TargetError(f"{entry[:260]!r}: {exc}") from None
    if port_text is None:
        return canonical, None
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise TargetError(f"{entry[:260]!r}: the port must be 1..65535")
    return canonical, int(port_text)


def format_entry(host: str, port: int | None) -> str:
    """The canonical text of a parsed entry: IPv6 hosts in brackets, no leading zeros in the port."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def canonical_entry(entry: str) -> str:
    """`entry` in its canonical spelling (`parse_entry` then `format_entry`)."""
    return format_entry(*parse_entry(entry))
