"""net.fetch against real local HTTP listeners (SPEC §8): what is allowed goes through, every blocked
spelling is refused before a connection is made, the connection is pinned to the checked address,
redirects are not followed, bodies and timeouts are capped, and at most N fetches run at once.
The last tests drive the same service from a real confined worker plugin."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from plugbox.errors import CapabilityError, CapabilityTimeout
from plugbox.host import Host
from plugbox.net.addresses import IPAddress
from plugbox.net.allowlist import HostList
from plugbox.net.fetch import FetchPolicy, FetchService
from plugbox.settings import load_settings

from .conftest import SESSION, WritePlugin, enable

pytestmark = pytest.mark.timeout(60)


class Listener:
    """A tiny HTTP/1.1 server on 127.0.0.1 in the test's own event loop. It counts every TCP
    connection it accepts, so a test can assert that a refused fetch never reached it."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        self.in_flight = 0
        self.peak = 0
        self.requests: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self._changed = asyncio.Condition()
        self.sni: list[str | None] = []
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Listener:
        if self._ssl is not None:
            self._ssl.sni_callback = lambda sock, name, ctx: self.sni.append(name)  # type: ignore[assignment]
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self.release.set()
        self._server.close()
        await self._server.wait_closed()

    async def wait_in_flight(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight >= count)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        async with self._changed:
            self._changed.notify_all()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
            await self._respond(path, method, headers, body, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.in_flight -= 1
            writer.close()

    async def _respond(
        self, path: str, method: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        def send(status: str, ctype: str, payload: bytes, extra: str = "", length: bool = True) -> None:
            head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nConnection: close\r\n{extra}"
            if length:
                head += f"Content-Length: {len(payload)}\r\n"
            writer.write(head.encode() + b"\r\n" + payload)

        if path == "/hold":
            await self.release.wait()
            send("200 OK", "text/plain", b"released")
        elif path == "/json":
            send("200 OK", "application/json", b'{"a": 1}')
        elif path == "/bin":
            send("200 OK", "application/octet-stream", b"\x00\xff\x10")
        elif path == "/redirect":
            send("302 Found", "text/plain", b"", extra=f"Location: http://127.0.0.1:{self.port}/json\r\n")
        elif path.startswith("/big-declared"):
            send("200 OK", "text/plain", b"x" * 5000)
        elif path.startswith("/big-stream"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
            for _ in range(50):
                writer.write(b"y" * 100)
                await writer.drain()
        elif path == "/echo":
            echo = {"method": method, "headers": headers, "body": body.decode("latin-1")}
            multi = "X-Multi: a\r\nX-Multi: b\r\n"
            send("201 Created", "application/json; charset=utf-8", json.dumps(echo).encode(), extra=multi)
        else:
            send("200 OK", "text/plain; charset=utf-8", "héllo".encode())
        await writer.drain()


def service(policy: list[str], *, resolver: Callable[[str, int], Awaitable[list[IPAddress]]] | None = None,
            ssl_context: ssl.SSLContext | None = None, secrets: tuple[str, ...] = (), **settings: Any) -> FetchService:
    conf = load_settings(environ={}, data_dir="/nonexistent-not-used", **settings)
    kwargs: dict[str, Any] = {"ssl_context": ssl_context}
    if resolver is not None:
        kwargs["resolver"] = resolver
    return FetchService(conf, lambda _pid: FetchPolicy(allow=HostList.parse(policy), secrets=secrets), **kwargs)


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with Listener() as server:
        yield server


# -- allowed -----------------------------------------------------------------------------------------


async def test_exempt_host_is_fetched_with_the_documented_result_shape(listener: Listener) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",))
    result = await fetch.fetch("p", f"http://localhost:{listener.port}/")
    assert result == {
        "ok": True,
        "status": 200,
        "status_text": "OK",
        "headers": {"content-type": "text/plain; charset=utf-8", "connection": "close", "content-length": "6"},
        "body": "héllo",
    }


async def test_json_is_text_binary_is_bytes(listener: Listener) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",))
    assert (await fetch.fetch("p", f"http://localhost:{listener.port}/json"))["body"] == '{"a": 1}'
    assert (await fetch.fetch("p", f"http://localhost:{listener.port}/bin"))["body"] == b"\x00\xff\x10"


async def test_method_headers_and_body_reach_the_server(listener: Listener) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",))
    result = await fetch.fetch(
        "p", f"http://localhost:{listener.port}/echo", method="post", headers={"X-Token": "t1"}, body=b"\x01payload"
    )
    echo = json.loads(result["body"])
    assert (result["status"], result["ok"], echo["method"], echo["body"]) == (201, True, "POST", "\x01payload")
    assert echo["headers"]["x-token"] == "t1"
    assert echo["headers"]["host"] == f"localhost:{listener.port}"
    assert echo["headers"]["accept-encoding"] == "identity"
    assert echo["headers"]["user-agent"].startswith("plugbox/")
    assert result["headers"]["x-multi"] == "a, b"


async def test_exemption_skips_the_address_check_but_not_the_allowlist(listener: Listener) -> None:
    fetch = service(["api.example.com"], fetch_exempt_hosts=("localhost",))
    with pytest.raises(CapabilityError, match="not on the plugin's allowlist"):
        await fetch.fetch("p", f"http://localhost:{listener.port}/")
    assert listener.connections == 0


# -- blocked before any connection -------------------------------------------------------------------

BLOCKED_SPELLINGS = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "0x7f.1",
    "127.1",
    "127.0.1",
    "127.000.000.001",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[64:ff9b::127.0.0.1]",
    "[2002:7f00:1::1]",
    "localhost",  # resolves to loopback through /etc/hosts
    "LOCALHOST.",
    "0.0.0.0",
    "0",
]


@pytest.mark.parametrize("host", BLOCKED_SPELLINGS)
async def test_every_spelling_of_a_local_address_is_refused_before_connecting(listener: Listener, host: str) -> None:
    fetch = service(["*"])
    with pytest.raises(CapabilityError, match="not public") as caught:
        await fetch.fetch("p", f"http://{host}:{listener.port}/")
    assert "net.fetch" in str(caught.value)
    assert listener.connections == 0


async def test_exemption_by_name_does_not_exempt_the_address(listener: Listener) -> None:
    fetch = service(["*"], fetch_exempt_hosts=("localhost",))
    with pytest.raises(CapabilityError, match="not public"):
        await fetch.fetch("p", f"http://127.0.0.1:{listener.port}/")
    assert listener.connections == 0


async def test_one_private_address_among_public_ones_blocks_the_name(listener: Listener) -> None:
    async def mixed(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("127.0.0.1")]

    fetch = service(["*"], resolver=mixed)
    with pytest.raises(CapabilityError, match=r"127\.0\.0\.1 \(resolved from rebind\.test\) is not public"):
        await fetch.fetch("p", f"http://rebind.test:{listener.port}/")
    assert listener.connections == 0


# -- pinning -----------------------------------------------------------------------------------------


class CountingResolver:
    def __init__(self, answer: str) -> None:
        self.answer = ipaddress.ip_address(answer)
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        return [self.answer]


async def test_connection_goes_to_the_checked_address_with_the_original_host_header(listener: Listener) -> None:
    # `pinned.test` exists nowhere but in this resolver: if httpx resolved the name again, it would fail.
    resolver = CountingResolver("127.0.0.1")
    fetch = service(["pinned.test"], resolver=resolver, fetch_exempt_hosts=("pinned.test",))
    result = await fetch.fetch("p", f"http://pinned.test:{listener.port}/echo")
    assert json.loads(result["body"])["headers"]["host"] == f"pinned.test:{listener.port}"
    assert resolver.calls == ["pinned.test"]  # resolved once, by the service


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}"],
        check=True, capture_output=True,
    )
    return cert, key


async def _tls_fetch(tmp_path: Path, cert_name: str) -> tuple[Listener, Any]:
    cert, key = _self_signed(tmp_path, cert_name)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with Listener(server_ctx) as server:
        fetch = service(["pinned.test"], resolver=CountingResolver("127.0.0.1"), ssl_context=client_ctx,
                        fetch_exempt_hosts=("pinned.test",))
        try:
            return server, await fetch.fetch("p", f"https://pinned.test:{server.port}/json")
        except CapabilityError as exc:
            return server, exc


async def test_tls_uses_sni_and_verification_for_the_original_hostname(tmp_path: Path) -> None:
    server, result = await _tls_fetch(tmp_path, "pinned.test")
    assert isinstance(result, dict), result
    assert result["body"] == '{"a": 1}'
    assert server.sni == ["pinned.test"]


async def test_tls_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    server, result = await _tls_fetch(tmp_path, "other.test")
    assert isinstance(result, CapabilityError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(result) or "certificate" in str(result).lower()
    assert server.requests == []


# -- redirects, caps, timeouts, concurrency ------------------------------------------------------------


async def test_redirect_is_returned_not_followed(listener: Listener) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",))
    result = await fetch.fetch("p", f"http://localhost:{listener.port}/redirect")
    assert (result["status"], result["ok"]) == (302, False)
    assert result["headers"]["location"].endswith("/json")
    assert [r["path"] for r in listener.requests] == ["/redirect"]


@pytest.mark.parametrize("path", ["/big-declared", "/big-stream"])
async def test_body_over_the_cap_is_cut_naming_the_cap(listener: Listener, path: str) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",), fetch_body_max_bytes=1000)
    with pytest.raises(CapabilityError, match="1000-byte cap"):
        await fetch.fetch("p", f"http://localhost:{listener.port}{path}")


async def test_body_at_the_cap_is_returned_whole(listener: Listener) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",), fetch_body_max_bytes=5000)
    assert len((await fetch.fetch("p", f"http://localhost:{listener.port}/big-stream"))["body"]) == 5000


async def test_zero_timeout_is_clamped_to_one_millisecond(listener: Listener) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",))
    with pytest.raises(CapabilityTimeout, match="within 1 ms"):
        await fetch.fetch("p", f"http://localhost:{listener.port}/hold", timeout_ms=0)


async def test_huge_timeout_is_clamped_to_the_maximum(listener: Listener) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",), fetch_timeout_ms=100, fetch_timeout_max_ms=200)
    with pytest.raises(CapabilityTimeout, match="within 200 ms"):
        await fetch.fetch("p", f"http://localhost:{listener.port}/hold", timeout_ms=10**9)


async def test_at_most_sixteen_fetches_run_at_once(listener: Listener) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",))
    assert fetch._settings.fetch_max_in_flight == 16
    url = f"http://localhost:{listener.port}/hold"
    # five plugins, each within its share of four: 20 fetches, 16 run, 4 queue
    tasks = [asyncio.create_task(fetch.fetch(f"p{i % 5}", url, timeout_ms=20000)) for i in range(20)]
    try:
        async with asyncio.timeout(10):
            await listener.wait_in_flight(16)
        # Every fetch reaches the slot wait in its first step (the checks before it never wait), so by
        # now the other four are queued, and none of them can start before a slot is released.
        assert fetch.queued == 4
        assert (fetch.in_flight, listener.in_flight) == (16, 16)
        listener.release.set()
        results = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    assert [r["body"] for r in results] == ["released"] * 20
    assert (fetch.peak_in_flight, listener.peak) == (16, 16)


async def test_one_plugin_gets_only_its_share_of_fetch_slots_and_a_neighbour_still_fetches(
    listener: Listener,
) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",), fetch_max_in_flight_per_plugin=3)
    url = f"http://localhost:{listener.port}/hold"
    hogs = [asyncio.create_task(fetch.fetch("hog", url, timeout_ms=20000)) for _ in range(3)]
    try:
        async with asyncio.timeout(10):
            await listener.wait_in_flight(3)
        with pytest.raises(CapabilityError, match=r"plugin 'hog' already has 3 fetches in flight.*"
                                                  r"fetch_max_in_flight_per_plugin = 3"):
            await fetch.fetch("hog", url, timeout_ms=20000)
        assert listener.connections == 3  # the refused fetch never connected
        neighbour = await fetch.fetch("neighbour", f"http://localhost:{listener.port}/json", timeout_ms=5000)
        assert neighbour["status"] == 200
        listener.release.set()
        assert [r["body"] for r in await asyncio.gather(*hogs)] == ["released"] * 3
    finally:
        for task in hogs:
            task.cancel()
    assert fetch.in_flight_of("hog") == 0  # the share is given back
    assert (await fetch.fetch("hog", url, timeout_ms=5000))["body"] == "released"


async def test_a_fetch_waiting_for_a_host_slot_holds_its_share_until_it_gives_up(listener: Listener) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",), fetch_max_in_flight=1,
                    fetch_max_in_flight_per_plugin=2)
    url = f"http://localhost:{listener.port}/hold"
    holder = asyncio.create_task(fetch.fetch("a", url, timeout_ms=20000))
    try:
        async with asyncio.timeout(10):
            await listener.wait_in_flight(1)
        with pytest.raises(CapabilityTimeout):
            await fetch.fetch("b", url, timeout_ms=100)  # queued for the host slot, then timed out
        assert fetch.in_flight_of("b") == 0
    finally:
        listener.release.set()
        await holder


async def test_unreachable_port_is_a_capability_error(listener: Listener) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",))
    with pytest.raises(CapabilityError, match="failed: ConnectError"):
        await fetch.fetch("p", "http://localhost:1/")


async def test_secret_config_value_never_appears_in_an_error(listener: Listener) -> None:
    fetch = service(["localhost"], fetch_exempt_hosts=("localhost",), secrets=("tok-9f8e7d6c",))
    with pytest.raises(CapabilityError) as caught:
        await fetch.fetch("p", "http://tok-9f8e7d6c.localhost:1/")
    assert "tok-9f8e7d6c" not in str(caught.value)


# -- from a confined worker ---------------------------------------------------------------------------

FETCHER = """
from plugbox.sdk import CapabilityError, Plugin

class Fetcher(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook):
        try:
            result = await self.ctx.net.fetch(hook.data["body"], headers={"X-From": "worker"})
            await self.ctx.storage.set("result", result)
        except CapabilityError as exc:
            await self.ctx.storage.set("error", [type(exc).__name__, str(exc)])
"""


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"fetch_exempt_hosts": ("localhost",)}


async def test_worker_plugin_fetches_an_exempt_allowed_host(
    host: Host, write_plugin: WritePlugin, listener: Listener
) -> None:
    await enable(host, write_plugin(FETCHER, permissions=["net:fetch", "storage:use"], net={"allow": ["localhost"]}))
    await host.inject_inbound(SESSION, "15550001111@c.us", f"http://localhost:{listener.port}/echo")
    found, result = host.storage.get("p", "result")
    assert found, host.storage.get("p", "error")
    assert result["status"] == 201
    assert json.loads(result["body"])["headers"]["x-from"] == "worker"


async def test_worker_plugin_gets_capability_error_for_a_blocked_address(
    host: Host, write_plugin: WritePlugin, listener: Listener
) -> None:
    await enable(host, write_plugin(FETCHER, permissions=["net:fetch", "storage:use"], net={"allow": ["*"]}))
    await host.inject_inbound(SESSION, "15550001111@c.us", f"http://2130706433:{listener.port}/")
    assert host.storage.get("p", "result") == (False, None)
    _, (kind, message) = host.storage.get("p", "error")
    assert kind == "CapabilityError"
    assert "127.0.0.1 is not public (loopback" in message
    assert listener.connections == 0


async def test_worker_plugin_allowlist_includes_https_config_hosts(host: Host, write_plugin: WritePlugin) -> None:
    plugin = write_plugin(
        FETCHER,
        permissions=["net:fetch", "storage:use"],
        net={"allowConfigHosts": ["baseUrl"]},
        configSchema={"type": "object", "properties": {"baseUrl": {"type": "string"}}},
    )
    entry = host.load_plugin(plugin)
    await host.set_config(entry.plugin_id, {"baseUrl": "https://api.configured.example/v1"})
    await host.set_active_sessions(entry.plugin_id, [SESSION])
    await host.enable(entry.plugin_id)
    await host.inject_inbound(SESSION, "15550001111@c.us", "http://elsewhere.example/")
    _, (_, message) = host.storage.get("p", "error")
    assert "elsewhere.example:80 is not on the plugin's allowlist" in message
    policy = host._fetch_policy("p")
    assert policy.allow.permits("api.configured.example", 443)


JSON_FETCHER = """
from plugbox.sdk import CapabilityError, Plugin

class Fetcher(Plugin):
    async def on_load(self, ctx):
        ctx.register_hook("message:received", self.on_message)

    async def on_message(self, hook):
        try:
            result = await self.ctx.net.fetch(hook.data["body"], json=True)
            await self.ctx.storage.set("result", result)
        except CapabilityError as exc:
            await self.ctx.storage.set("error", [type(exc).__name__, str(exc)])
"""


async def test_worker_plugin_asks_for_json_and_gets_the_body_decoded(
    host: Host, write_plugin: WritePlugin, listener: Listener
) -> None:
    await enable(host, write_plugin(JSON_FETCHER, permissions=["net:fetch", "storage:use"],
                                    net={"allow": ["localhost"]}))
    await host.inject_inbound(SESSION, "15550001111@c.us", f"http://localhost:{listener.port}/json")
    found, result = host.storage.get("p", "result")
    assert found, host.storage.get("p", "error")
    assert result["json"] == {"a": 1}
    assert result["body"] == '{"a": 1}'
    assert listener.requests[-1]["headers"]["accept"] == "application/json"


async def test_worker_plugin_asking_json_of_a_non_json_body_gets_a_capability_error(
    host: Host, write_plugin: WritePlugin, listener: Listener
) -> None:
    await enable(host, write_plugin(JSON_FETCHER, permissions=["net:fetch", "storage:use"],
                                    net={"allow": ["localhost"]}))
    await host.inject_inbound(SESSION, "15550001111@c.us", f"http://localhost:{listener.port}/plain")
    assert host.storage.get("p", "result") == (False, None)
    _, (kind, message) = host.storage.get("p", "error")
    assert kind == "CapabilityError"
    assert "status 200) is not JSON" in message
