"""Which addresses net.fetch may reach (SPEC §8), and how a host that spells an address is read."""

from __future__ import annotations

import ipaddress

import pytest

from plugbox.errors import LiteralIPError
from plugbox.net.addresses import blocked_reason, parse_ip_literal

ip = ipaddress.ip_address

BLOCKED = [
    # IPv4
    ("0.0.0.0", "this-network"),
    ("0.1.2.3", "this-network"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),  # the cloud metadata endpoint
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.8", "IETF protocol assignments"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "6to4 relay"),
    ("192.168.1.1", "private"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "IPv4-mapped"),
    ("::ffff:8.8.8.8", "IPv4-mapped"),  # mapped is refused whatever it embeds
    ("::ffff:0:7f00:1", "IPv4-translated"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("64:ff9b::127.0.0.1", "NAT64 of 127.0.0.1 (loopback"),
    ("64:ff9b::10.0.0.1", "NAT64 of 10.0.0.1 (private"),
    ("64:ff9b::a9fe:a9fe", "NAT64 of 169.254.169.254 (link-local"),
    ("64:ff9b:1::8.8.8.8", "local-use NAT64"),
    ("2002:7f00:1::", "6to4 of 127.0.0.1 (loopback"),
    ("2002:c0a8:101::1", "6to4 of 192.168.1.1 (private"),
    ("2002:a9fe:a9fe::1", "6to4 of 169.254.169.254"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo of 127.0.0.1 (loopback"),  # client ~0x80fffffe
    ("2001:0:7f00:1::f7f7:f7f7", "Teredo of 127.0.0.1"),  # server 127.0.0.1, client 8.8.8.8
    ("100::1", "discard-only"),
    ("2001:2::1", "benchmarking"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("4000::1", "reserved"),
    ("::2", "IPv4-compatible"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.15.255.255",
    "172.32.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.254",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "64:ff9b::8.8.8.8",  # NAT64 of a public address
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo: server 65.54.227.120, client 8.8.8.8
]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_non_public_address_is_blocked_with_its_reason(address: str, reason: str) -> None:
    found = blocked_reason(ip(address))
    assert found is not None, address
    assert reason in found


@pytest.mark.parametrize("address", PUBLIC)
def test_public_address_is_allowed(address: str) -> None:
    assert blocked_reason(ip(address)) is None


def test_scoped_ipv6_address_is_blocked() -> None:
    assert blocked_reason(ipaddress.IPv6Address("2606:4700::1%eth0")) == "scoped address"


# -- literals ----------------------------------------------------------------------------------------

LITERALS = [
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),  # one 32-bit decimal
    ("0x7f000001", "127.0.0.1"),  # one 32-bit hex
    ("0X7F000001", "127.0.0.1"),
    ("017700000001", "127.0.0.1"),  # one 32-bit octal
    ("0177.0.0.1", "127.0.0.1"),  # octal part
    ("0x7f.0.0.1", "127.0.0.1"),  # hex part
    ("0x7f.0.0.0x1", "127.0.0.1"),
    ("127.1", "127.0.0.1"),  # a.b: b fills 24 bits
    ("127.0.1", "127.0.0.1"),  # a.b.c: c fills 16 bits
    ("0x7f.1", "127.0.0.1"),  # mixed
    ("0177.0x0.1", "127.0.0.1"),
    ("127.0.0.01", "127.0.0.1"),
    ("10.0x10.0377.1", "10.16.255.1"),
    ("0", "0.0.0.0"),
    ("0x", "0.0.0.0"),  # inet_aton reads a bare 0x as 0
    ("3232235777", "192.168.1.1"),
    ("169.16689662", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"),
    ("[::1]", "::1"),
    ("::1", "::1"),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    ("[0:0:0:0:0:ffff:7f00:1]", "::ffff:7f00:1"),
]


@pytest.mark.parametrize(("host", "address"), LITERALS)
def test_literal_in_any_notation_is_read_as_the_resolver_reads_it(host: str, address: str) -> None:
    assert parse_ip_literal(host) == ip(address)


@pytest.mark.parametrize("host", ["example.com", "localhost", "a1.b2", "0x7f.example", "127.0.0.1.nip.io", "ten"])
def test_names_are_not_literals(host: str) -> None:
    assert parse_ip_literal(host) is None


@pytest.mark.parametrize(
    "host",
    [
        "08.0.0.1",  # 8 is not an octal digit
        "0400.0.0.1",  # part > 255
        "127.0.0.256",
        "127.16777216",  # b needs > 24 bits
        "4294967296",  # > 32 bits
        "1.2.3.4.5",
        "0xfffffffff",
        "1" * 200,
        "[fe80::1%eth0]",  # zone id
        "[::1::2]",
        "1:2",
    ],
)
def test_numeric_looking_host_that_is_no_valid_address_is_refused(host: str) -> None:
    with pytest.raises(LiteralIPError):
        parse_ip_literal(host)


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "127.0.1", "[::ffff:127.0.0.1]"])
def test_every_spelling_of_loopback_is_blocked(host: str) -> None:
    literal = parse_ip_literal(host)
    assert literal is not None
    assert blocked_reason(literal) is not None
