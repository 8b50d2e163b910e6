"""Which IP addresses `net.fetch` may connect to, and how a URL host that *is* an address is read.

`blocked_reason(ip)` is the one address rule: None for a publicly routable address, otherwise a short
reason ("loopback", "private", "6to4 of 127.0.0.1 (loopback)", ...). An address is public only if no
rule below matches; unknown IPv6 space outside 2000::/3 is refused too, so a new special range is
blocked until it is listed here, not allowed until someone notices.

IPv6 forms that carry an IPv4 address are judged by that address: 6to4 (2002::/16), NAT64
(64:ff9b::/96) and Teredo (2001::/32, server and client). IPv4-mapped (::ffff:0:0/96),
IPv4-translated (::ffff:0:0:0/96) and IPv4-compatible (::/96) addresses are refused outright: no
public server needs them, and a socket connecting to one reaches the embedded IPv4 host over IPv4.
The local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215) is not globally reachable, so it is refused
outright rather than decoded.

`parse_ip_literal(host)` recognises every spelling a C resolver accepts as an address, the way glibc's
`inet_aton` reads IPv4 (1 to 4 parts, each decimal, `0x` hex or `0`-prefixed octal, the last part
filling the remaining bytes: `127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`), plus IPv6 literals
with or without brackets. Without this, `http://2130706433/` would reach the resolver, which reads
it as 127.0.0.1. Zone ids (`fe80::1%eth0`) are refused.

This module is pure: no I/O, no DNS.
"""

from __future__ import annotations

import ipaddress
import re

from plugbox.errors import LiteralIPError

__all__ = ["IPAddress", "LiteralIPError", "blocked_reason", "is_public", "parse_ip_literal"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_N4 = ipaddress.IPv4Network
_N6 = ipaddress.IPv6Network

# Order matters only for the reason reported: the first match names it.
_BLOCKED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_N4("0.0.0.0/8"), "this-network (0.0.0.0/8)"),
    (_N4("10.0.0.0/8"), "private (10.0.0.0/8)"),
    (_N4("100.64.0.0/10"), "carrier-grade NAT (100.64.0.0/10)"),
    (_N4("127.0.0.0/8"), "loopback (127.0.0.0/8)"),
    (_N4("169.254.0.0/16"), "link-local (169.254.0.0/16)"),
    (_N4("172.16.0.0/12"), "private (172.16.0.0/12)"),
    (_N4("192.0.0.0/24"), "IETF protocol assignments (192.0.0.0/24)"),
    (_N4("192.0.2.0/24"), "documentation (192.0.2.0/24)"),
    (_N4("192.88.99.0/24"), "6to4 relay anycast (192.88.99.0/24)"),
    (_N4("192.168.0.0/16"), "private (192.168.0.0/16)"),
    (_N4("198.18.0.0/15"), "benchmarking (198.18.0.0/15)"),
    (_N4("198.51.100.0/24"), "documentation (198.51.100.0/24)"),
    (_N4("203.0.113.0/24"), "documentation (203.0.113.0/24)"),
    (_N4("224.0.0.0/4"), "multicast (224.0.0.0/4)"),
    (_N4("255.255.255.255/32"), "broadcast"),
    (_N4("240.0.0.0/4"), "reserved (240.0.0.0/4)"),
)

_BLOCKED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_N6("::/128"), "unspecified (::)"),
    (_N6("::1/128"), "loopback (::1)"),
    (_N6("::ffff:0:0/96"), "IPv4-mapped (::ffff:0:0/96)"),
    (_N6("::ffff:0:0:0/96"), "IPv4-translated (::ffff:0:0:0/96)"),
    (_N6("::/96"), "IPv4-compatible (::/96)"),
    (_N6("64:ff9b:1::/48"), "local-use NAT64 (64:ff9b:1::/48)"),
    (_N6("100::/64"), "discard-only (100::/64)"),
    (_N6("2001:2::/48"), "benchmarking (2001:2::/48)"),
    (_N6("2001:10::/28"), "ORCHID (2001:10::/28)"),
    (_N6("2001:20::/28"), "ORCHIDv2 (2001:20::/28)"),
    (_N6("2001:db8::/32"), "documentation (2001:db8::/32)"),
    (_N6("3fff::/20"), "documentation (3fff::/20)"),
    (_N6("5f00::/16"), "SRv6 SIDs (5f00::/16)"),
    (_N6("fc00::/7"), "unique-local (fc00::/7)"),
    (_N6("fe80::/10"), "link-local (fe80::/10)"),
    (_N6("fec0::/10"), "site-local (fec0::/10)"),
    (_N6("ff00::/8"), "multicast (ff00::/8)"),
)

_NAT64 = _N6("64:ff9b::/96")
_TEREDO = _N6("2001::/32")
_SIX_TO_FOUR = _N6("2002::/16")
_GLOBAL_UNICAST = _N6("2000::/3")


def blocked_reason(ip: IPAddress) -> str | None:
    """None if `ip` is publicly routable; otherwise why it is not."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _blocked_v4(ip)
    if ip.scope_id:
        return "scoped address"
    embedded = _embedded_v4(ip)
    if embedded is not None:
        kind, v4 = embedded
        reason = _blocked_v4(v4)
        return f"{kind} of {v4} ({reason})" if reason else None
    for network, reason in _BLOCKED_V6:
        if ip in network:
            return reason
    if ip not in _GLOBAL_UNICAST:
        return "reserved (outside 2000::/3)"
    return None


def is_public(ip: IPAddress) -> bool:
    return blocked_reason(ip) is None


def _blocked_v4(ip: ipaddress.IPv4Address) -> str | None:
    for network, reason in _BLOCKED_V4:
        if ip in network:
            return reason
    # Belt and braces: anything CPython's registry says is not global, under a generic reason.
    return None if ip.is_global else "not globally reachable"


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address a 6to4, NAT64 or Teredo address leads to. For Teredo both the server and
    the (obfuscated) client address count; the worse of the two is returned."""
    if ip in _SIX_TO_FOUR:
        return "6to4", ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _TEREDO:
        server = ipaddress.IPv4Address((int(ip) >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~int(ip) & 0xFFFFFFFF)
        for v4 in (client, server):
            if _blocked_v4(v4):
                return "Teredo", v4
        return "Teredo", client
    return None


# --- literals ---------------------------------------------------------------------------------------


_V4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*", re.ASCII)
_NUMERIC_LOOKING = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)(\.(0[xX][0-9a-fA-F]*|[0-9]+))*", re.ASCII)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells, or None if it is a name. Raises LiteralIPError for something that
    looks numeric but no resolver would read as one address: it must not fall through to DNS."""
    if host.startswith("[") and host.endswith("]"):
        return _parse_v6(host[1:-1], host)
    if ":" in host:
        return _parse_v6(host, host)
    return _parse_v4(host)


def _parse_v6(text: str, host: str) -> ipaddress.IPv6Address:
    if "%" in text:
        raise LiteralIPError(f"{host!r}: IPv6 zone ids are not allowed")
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise LiteralIPError(f"{host!r} is not a valid IPv6 address") from None


def _parse_v4(host: str) -> ipaddress.IPv4Address | None:
    if not _NUMERIC_LOOKING.fullmatch(host):
        return None
    parts = host.split(".")
    if len(parts) > 4:
        raise LiteralIPError(f"{host!r} has more than four numeric parts")
    values = []
    for part in parts:
        if len(part) > 34:  # 0x + 32 hex digits already overflows; also keeps int() cheap
            raise LiteralIPError(f"{host!r}: a part is out of range")
        if not _V4_PART.fullmatch(part):
            raise LiteralIPError(f"{host!r}: {part!r} is not a decimal, octal or hex number")
        values.append(_part_value(part))
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        raise LiteralIPError(f"{host!r}: a part is out of range")
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _part_value(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)  # glibc's inet_aton reads a bare "0x" as 0
    if len(part) > 1 and part[0] == "0":
        return int(part, 8)
    return int(part)
