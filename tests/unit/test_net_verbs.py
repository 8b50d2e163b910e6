"""net.fetch arguments are validated before the fetch service sees them (SPEC §3, §6)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from plugbox.capabilities.messages import MessageService
from plugbox.capabilities.router import CapabilityRouter, Services
from plugbox.engines.loopback import LoopbackEngine
from plugbox.errors import CapabilityError, ConfigError
from plugbox.hooks import HookBus
from plugbox.logrelay import REDACTED
from plugbox.net.allowlist import HostList
from plugbox.net.fetch import FetchPolicy, FetchService
from plugbox.permissions import SessionScope
from plugbox.settings import load_settings
from plugbox.storage.kv import PluginStorage
from plugbox.storage.sqlite import SqliteDatabase


@dataclass
class Caller:
    plugin_id: str = "p"
    permissions: frozenset[str] = frozenset({"net:fetch"})
    scope: SessionScope = field(default_factory=lambda: SessionScope(["*"], True, []))


class NoNetwork:
    """A resolver that fails the test if reached: every case here must be refused before DNS."""

    calls = 0

    async def __call__(self, host: str, port: int) -> list[Any]:
        self.calls += 1
        raise AssertionError(f"resolver reached for {host}:{port}")


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[CapabilityRouter]:
    db = SqliteDatabase(tmp_path / "plugbox.db")
    engine = LoopbackEngine()
    settings = load_settings(environ={}, data_dir=str(tmp_path))
    fetch = FetchService(
        settings,
        lambda _pid: FetchPolicy(allow=HostList.parse(["api.example.com", "127.0.0.1"]), secrets=["s3cr3t-token"]),
        resolver=NoNetwork(),
    )
    messages = MessageService(engine, HookBus(budget=lambda _p: 1.0))
    services = Services(engine=engine, messages=messages, storage=PluginStorage(db), net=fetch)
    yield CapabilityRouter(services, timeout=5.0, send_factor=4)
    await db.close()


def args(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"url": "https://api.example.com/", "method": "GET", "headers": {}, "body": None,
                           "timeout_ms": 1000}
    doc.update(over)
    return doc


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (args(url=""), "url"),
        (args(url="https://api.example.com/" + "a" * 8192), "url"),
        (args(url=5), "url"),
        (args(method="TRACE"), "method"),
        (args(method="CONNECT"), "method"),
        (args(method="G" * 17), "method"),
        (args(headers={"X-Ok": "a\r\nInjected: 1"}), "headers"),
        (args(headers={"X-Ok": "a\nb"}), "headers"),
        (args(headers={"X-Ok": "a\x00b"}), "headers"),
        (args(headers={"Bad Name": "x"}), "headers"),
        (args(headers={"": "x"}), "headers"),
        (args(headers={"X-Big": "v" * 8193}), "headers"),
        (args(headers={f"X-{n}": "v" for n in range(65)}), "headers"),
        (args(headers={"X-Num": 5}), "headers"),
        (args(body=["not", "text"]), "body"),
        (args(body=b"x" * ((10 << 20) + 1)), "body"),
        (args(timeout_ms="fast"), "timeout_ms"),
        (args(timeout_ms=1.5), "timeout_ms"),
        (args(extra=True), "extra"),
    ],
)
async def test_invalid_fetch_argument_is_refused_naming_it(
    router: CapabilityRouter, bad: dict[str, Any], named: str
) -> None:
    with pytest.raises(CapabilityError, match="invalid argument") as caught:
        await router.invoke(Caller(), "net.fetch", bad)
    assert named in str(caught.value)
    assert "net.fetch" in str(caught.value)


async def test_lower_case_method_is_accepted(router: CapabilityRouter) -> None:
    # Gets past validation; refused later only because the literal address is loopback.
    with pytest.raises(CapabilityError, match="not public"):
        await router.invoke(Caller(), "net.fetch", args(url="http://127.0.0.1/", method="post"))


@pytest.mark.parametrize("header", ["Host", "content-length", "Transfer-Encoding", "Connection", "Proxy-Authorization"])
async def test_headers_the_host_owns_are_refused(router: CapabilityRouter, header: str) -> None:
    with pytest.raises(CapabilityError, match=r"'headers'.*set by the host"):
        await router.invoke(Caller(), "net.fetch", args(headers={header: "x"}))


@pytest.mark.parametrize("url", ["ftp://api.example.com/", "file:///etc/passwd", "gopher://api.example.com/"])
async def test_only_http_and_https_are_fetched(router: CapabilityRouter, url: str) -> None:
    with pytest.raises(CapabilityError, match="scheme"):
        await router.invoke(Caller(), "net.fetch", args(url=url))


async def test_host_off_the_allowlist_is_refused_before_dns(router: CapabilityRouter) -> None:
    with pytest.raises(CapabilityError, match=r"evil\.example\.com:443 is not on the plugin's allowlist"):
        await router.invoke(Caller(), "net.fetch", args(url="https://evil.example.com/"))


async def test_allowed_literal_loopback_is_still_blocked_before_dns(router: CapabilityRouter) -> None:
    with pytest.raises(CapabilityError, match=r"address 127\.0\.0\.1 is not public \(loopback"):
        await router.invoke(Caller(), "net.fetch", args(url="http://2130706433/"))


async def test_fetch_needs_net_fetch(router: CapabilityRouter) -> None:
    with pytest.raises(CapabilityError, match="'net:fetch'"):
        await router.invoke(Caller(permissions=frozenset()), "net.fetch", args())


async def test_secret_in_the_url_never_reaches_the_error(router: CapabilityRouter) -> None:
    with pytest.raises(CapabilityError) as caught:
        await router.invoke(Caller(), "net.fetch", args(url="https://s3cr3t-token.example.com/"))
    assert "s3cr3t-token" not in str(caught.value)
    assert REDACTED in str(caught.value)


def test_timeout_is_clamped_to_1_through_the_maximum(tmp_path: Path) -> None:
    settings = load_settings(environ={}, data_dir=str(tmp_path))
    fetch = FetchService(settings, lambda _pid: FetchPolicy(allow=HostList()))
    assert fetch.clamp_timeout_ms(0) == 1
    assert fetch.clamp_timeout_ms(-5) == 1
    assert fetch.clamp_timeout_ms(10**9) == settings.fetch_timeout_max_ms == 30000
    assert fetch.clamp_timeout_ms(1500) == 1500


def test_bad_exemption_entry_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    settings = load_settings(environ={}, data_dir=str(tmp_path), fetch_exempt_hosts=("not a host",))
    with pytest.raises(ConfigError, match="fetch_exempt_hosts"):
        FetchService(settings, lambda _pid: FetchPolicy(allow=HostList()))
