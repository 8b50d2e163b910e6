"""One host grammar: the manifest's `net.allow`, the operator's exemption list and a fetch URL agree
on which texts are hosts and on which host each names."""

from __future__ import annotations

import pytest

from plugbox.errors import ManifestError, TargetError
from plugbox.manifest import parse_manifest
from plugbox.net.allowlist import HostList
from plugbox.net.hosts import canonical_entry, parse_entry
from plugbox.net.urls import parse_target

# (entry, canonical host, port) — spellings each reader must take as the same host.
ACCEPTED = [
    ("api.example.com", "api.example.com", None),
    ("API.Example.COM:8443", "api.example.com", 8443),
    ("my_svc.internal", "my_svc.internal", None),
    ("_dmarc.example.com", "_dmarc.example.com", None),
    ("example.com.", "example.com", None),
    ("xn--bcher-kva.example", "xn--bcher-kva.example", None),
    ("127.1", "127.0.0.1", None),
    ("0x7f000001:80", "127.0.0.1", 80),
    ("[2001:DB8::1]:443", "2001:db8::1", 443),
    ("[::1]", "::1", None),
    ("localhost:08080", "localhost", 8080),
]

REFUSED = [
    "",
    "exa mple.com",
    "-bad.example.com",
    "*.example.com",
    "example..com",
    "a.b.123",
    "0400.0.0.1",
    "1.2.3.4.5",
    "bücher.example",
    "fe80::1%eth0",
    "[::1",
    "[not-v6]:80",
    "api.example.com:0",
    "api.example.com:65536",
    "api.example.com:",
    "user@example.com",
    "example.com/path",
    "a" * 64 + ".example.com",
]


def _manifest_allow(entry: str) -> str:
    doc = {"id": "p", "name": "P", "version": "1.0.0", "type": "extension", "main": "main.py",
           "net": {"allow": [entry]}}
    return parse_manifest(doc, host_version="9.9.9").net.allow[0]


def _url_for(entry: str) -> str:
    return f"http://{entry}/"


@pytest.mark.parametrize(("entry", "host", "port"), ACCEPTED)
def test_every_reader_accepts_a_host_and_names_the_same_one(entry: str, host: str, port: int | None) -> None:
    assert parse_entry(entry) == (host, port)
    stored = _manifest_allow(entry)
    assert stored == canonical_entry(entry)
    # What the manifest stores reads back as the same rule, in the allowlist and the exemption list.
    assert HostList.parse([stored]).rules == HostList.parse([entry]).rules == {(host, port)}
    # A URL naming that host is matched by the entry: fetch and the lists spell it the same way.
    target = parse_target(_url_for(entry))
    assert target.host == host
    assert HostList.parse([stored]).permits(target.host, target.port)


@pytest.mark.parametrize("entry", REFUSED)
def test_every_reader_refuses_what_is_not_a_host(entry: str) -> None:
    with pytest.raises(TargetError):
        parse_entry(entry)
    with pytest.raises(TargetError):
        HostList.parse([entry])
    with pytest.raises(ManifestError) as caught:
        _manifest_allow(entry)
    assert caught.value.field == "net.allow[0]"


@pytest.mark.parametrize(
    "host", ["exa mple.com", "-bad.example.com", "example..com", "a.b.123", "0400.0.0.1", "1.2.3.4.5"]
)
def test_fetch_refuses_the_hosts_the_lists_refuse(host: str) -> None:
    with pytest.raises(TargetError):
        parse_target(_url_for(host))


def test_the_any_host_entry_belongs_to_the_lists_not_the_grammar() -> None:
    assert _manifest_allow("*") == "*"
    assert HostList.parse(["*"]).any_host
    with pytest.raises(TargetError):
        parse_entry("*")
