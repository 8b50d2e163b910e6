"""An httpx transport whose every connection goes to addresses checked beforehand (no DNS rebinding).

httpx resolves the URL host when it connects; a resolver that answers "public" to the check and
"127.0.0.1" to the connection would walk straight past the address rule. `PinnedTransport` is built
per fetch with the addresses `FetchService` resolved and checked; its network backend ignores the
host it is asked for (after making sure it is the one expected) and connects to those addresses, in
order, by IP. Everything above the socket is httpx's: the Host header comes from the URL, and TLS
runs on the connected stream with SNI and certificate verification for the original hostname
(httpcore passes the URL host as `server_hostname` to `start_tls`).

The pool serves exactly one origin with one connection and no keep-alive, and the client that uses
this transport never follows redirects, so no second host can ever reach `connect_tcp`.
"""

from __future__ import annotations

import ssl
import typing
from collections.abc import Sequence

import httpcore
import httpx

from plugbox.errors import TargetError
from plugbox.net.addresses import IPAddress
from plugbox.net.hosts import canonical_host

__all__ = ["PinnedTransport"]


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, host: str, port: int, addresses: Sequence[IPAddress]) -> None:
        self._host = host
        self._port = port
        self._addresses = tuple(addresses)
        self._inner = httpcore.AnyIOBackend()
        self.connected_to: IPAddress | None = None

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            asked = canonical_host(host)[0]
        except TargetError:
            asked = None
        if (asked, port) != (self._host, self._port):
            raise httpcore.ConnectError(f"pinned transport for {self._host}:{self._port} asked for {host}:{port}")
        last: Exception = httpcore.ConnectError("no address to connect to")
        for ip in self._addresses:
            try:
                stream = await self._inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            self.connected_to = ip
            return stream
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not reachable through net.fetch")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """`httpx.AsyncHTTPTransport` (HTTP/1.1, no proxy, no environment) over `_PinnedBackend`."""

    def __init__(self, host: str, port: int, addresses: Sequence[IPAddress], ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False, retries=0)
        self.backend = _PinnedBackend(host, port, addresses)
        # httpx 0.28 has no public way to hand its pool a network backend; `_pool` is the attribute
        # `handle_async_request` sends through (tests/integration/test_fetch.py checks the pinning, so
        # an httpx upgrade that moves it fails loudly rather than silently unpinning).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            max_keepalive_connections=0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=self.backend,
        )
