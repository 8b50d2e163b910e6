"""The effective fetch allowlist (SPEC §8: net.allow plus the hosts of https config values named by
allowConfigHosts; `*` any; `host:port` exact; bare host any port) and the URL reading behind it."""

from __future__ import annotations

import pytest

from plugbox.errors import TargetError
from plugbox.manifest import NetPolicy, parse_manifest
from plugbox.net.allowlist import HostList, config_hosts, effective_allowlist
from plugbox.net.urls import parse_target


def allow(*entries: str) -> HostList:
    return HostList.parse(entries)


def test_bare_host_allows_any_port() -> None:
    hosts = allow("api.example.com")
    assert hosts.permits("api.example.com", 443)
    assert hosts.permits("api.example.com", 8080)
    assert not hosts.permits("evil.example.com", 443)


def test_host_with_port_allows_that_port_only() -> None:
    hosts = allow("hooks.example.org:8443")
    assert hosts.permits("hooks.example.org", 8443)
    assert not hosts.permits("hooks.example.org", 443)


def test_star_allows_any_host() -> None:
    assert allow("*").permits("anything.example", 1)


def test_empty_allowlist_allows_nothing() -> None:
    assert not allow().permits("api.example.com", 443)


def test_subdomains_and_parents_are_not_implied() -> None:
    hosts = allow("example.com")
    assert not hosts.permits("api.example.com", 443)
    assert not allow("api.example.com").permits("example.com", 443)


def test_entries_compare_in_canonical_spelling() -> None:
    hosts = allow("API.Example.COM.", "127.0.0.1:8080", "[::1]")
    assert hosts.permits("api.example.com", 1)
    assert hosts.permits(parse_target("http://0x7f000001:8080/").host, 8080)
    assert hosts.permits(parse_target("http://[0:0::1]/").host, 80)


@pytest.mark.parametrize("entry", ["exa mple.com", "host:0", "host:70000", "[::1", "08.1.1.1", "http://x/"])
def test_bad_entry_is_refused_naming_it(entry: str) -> None:
    with pytest.raises(ValueError, match=r"is not|must be|port|numeric|not a valid"):
        HostList.parse([entry])


# -- allowConfigHosts ------------------------------------------------------------------------------

NET = NetPolicy(allow=("api.example.com",), allow_config_hosts=("baseUrl", "crm.url"))


def test_https_config_value_adds_its_host_at_its_port() -> None:
    hosts = effective_allowlist(NET, [{"baseUrl": "https://Tenant.Example.net/v1?x=1"}])
    assert hosts.permits("tenant.example.net", 443)
    assert not hosts.permits("tenant.example.net", 80)
    assert hosts.permits("api.example.com", 9)  # the manifest list still applies


def test_https_config_value_with_explicit_port() -> None:
    hosts = effective_allowlist(NET, [{"baseUrl": "https://tenant.example.net:8443/"}])
    assert hosts.permits("tenant.example.net", 8443)
    assert not hosts.permits("tenant.example.net", 443)


def test_nested_config_field_is_followed() -> None:
    assert ("crm.example.io", 443) in config_hosts(NET, [{"crm": {"url": "https://crm.example.io"}}])


@pytest.mark.parametrize("value", ["http://plain.example.net/", "ftp://x.example/", "not a url", 42, None, ""])
def test_config_value_that_is_not_an_https_url_adds_nothing(value: object) -> None:
    assert config_hosts(NET, [{"baseUrl": value}]) == []


def test_fields_not_named_in_allow_config_hosts_add_nothing() -> None:
    assert config_hosts(NET, [{"other": "https://other.example/"}]) == []


def test_session_configs_add_their_hosts_too() -> None:
    base = {"baseUrl": "https://base.example/"}
    session = {"baseUrl": "https://session.example/"}
    hosts = effective_allowlist(NET, [base, session])
    assert hosts.permits("base.example", 443)
    assert hosts.permits("session.example", 443)


def test_manifest_net_entries_round_trip_through_the_allowlist() -> None:
    m = parse_manifest(
        {"id": "p", "name": "p", "version": "1.0.0", "type": "extension", "main": "main.py",
         "net": {"allow": ["API.example.com", "hooks.example.org:8443", "[::1]:80", "10.0.0.1"]}},
        host_version="0.1.0",
    )
    hosts = effective_allowlist(m.net, [])
    assert hosts.permits("api.example.com", 1)
    assert hosts.permits("hooks.example.org", 8443)
    assert hosts.permits("::1", 80)
    assert hosts.permits("10.0.0.1", 5)


# -- URL reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("https://api.example.com/x", "api.example.com", 443),
        ("http://API.example.com.:8080", "api.example.com", 8080),
        ("http://2130706433/", "127.0.0.1", 80),
        ("http://127.1:81/", "127.0.0.1", 81),
        ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1", 80),
        ("https://bücher.example/", "xn--bcher-kva.example", 443),
    ],
)
def test_url_host_is_read_canonical(url: str, host: str, port: int) -> None:
    target = parse_target(url)
    assert (target.host, target.port) == (host, port)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("http://user:pw@example.com/", "credentials"),
        ("http:///path", "no host"),
        ("http://exa%20mple.com/", "percent"),
        ("http://[fe80::1%25eth0]/", "percent-encoding and zone ids"),
        ("http://example.com:99999/", "port"),
        ("http://foo.123/", "numeric label"),
        ("http://08.0.0.1/", "Invalid IPv4"),
        ("http://08.1/", "not a decimal"),
        ("http://a..b/", "not a valid host"),
    ],
)
def test_unacceptable_url_is_refused_saying_why(url: str, why: str) -> None:
    with pytest.raises(TargetError, match=why):
        parse_target(url)


def test_url_that_httpx_refuses_still_names_the_literal_address() -> None:
    with pytest.raises(TargetError) as caught:
        parse_target("http://0177.0.0.1/")
    assert str(caught.value.ip) == "127.0.0.1"
