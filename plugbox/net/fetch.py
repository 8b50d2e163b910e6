"""The host service behind `ctx.net.fetch` (SPEC §8).

`FetchService.fetch(plugin_id, url, ...)` runs these steps, in this order, and refuses at the first
that fails; nothing touches the network before step 4, and nothing connects before step 5 passed:

1. parse the URL (`plugbox.net.urls`): http/https, no userinfo, a DNS name or an IP literal in any
   notation, read the way the C resolver would read it;
2. the host must be on the plugin's effective allowlist (`plugbox.net.allowlist`);
3. a literal address must be public (`plugbox.net.addresses`) unless the host is operator-exempt;
4. take one of the plugin's own `fetch_max_in_flight_per_plugin` slots (past its share the call is
   refused at once, naming the limit: one plugin must not hold every host-wide slot), then wait for
   one of `fetch_max_in_flight` host-wide slots (the wait counts against the call's own timeout:
   excess fetches queue, they are not refused; a freed slot goes to the plugin holding the fewest,
   `plugbox.totals.slots`), then resolve the name once;
5. every resolved address must be public, unless the host is on the operator's exemption list
   (`fetch_exempt_hosts`, same syntax as `net.allow`, matched against the URL host: the exemption
   skips the address rule only, never the plugin's allowlist);
6. send through `PinnedTransport`, which connects only to the addresses checked in step 5;
7. reserve the body's bytes (`plugbox.net.budget`: the declared length, or the cap when there is
   none) from the plugin's share and the host's pool, waiting within the call's timeout;
8. read the body while counting; past `fetch_body_max_bytes` the connection is closed and the call
   fails naming the cap.

`FetchService.download(url, max_bytes=...)` is the host's own GET through the same steps (install
from URL): any host may be named, but steps 1, 3, 5, 6 and 7 hold as for a plugin, under its own cap.

Choices the spec leaves open:
- Redirects are never followed. A 3xx comes back as an ordinary result (`ok` false, `location` in
  `headers`); a plugin that wants to follow it calls `fetch` again and every check runs again.
- `timeout_ms` is clamped to 1..`fetch_timeout_max_ms` and bounds the whole call (slot wait, DNS,
  connect, response, body). Running out raises CapabilityTimeout.
- Responses are not decompressed on the host: the request says `Accept-Encoding: identity` unless
  the plugin sets the header, and the body is the bytes on the wire (the cap counts those).
- The body is a str when the content type is text/*, JSON or XML, the content is not encoded and it
  decodes with its charset (UTF-8 by default); otherwise bytes.
- Request headers that frame or route the message (Host, Content-Length, Transfer-Encoding,
  Connection, Upgrade, TE, Trailer, Keep-Alive, Proxy-*) are refused: httpx sets them.
- Error messages name the host and port, never the full URL (query strings carry tokens), and are
  passed through `plugbox.logrelay.redact` with the plugin's secret config values.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import certifi
import httpx

from plugbox import __version__
from plugbox.errors import CapabilityError, CapabilityTimeout, ConfigError, FetchRefused, TargetError
from plugbox.logrelay import redact
from plugbox.net._transport import PinnedTransport
from plugbox.net.addresses import IPAddress, blocked_reason
from plugbox.net.allowlist import HostList
from plugbox.net.budget import BodyBudget
from plugbox.net.urls import Target, parse_target
from plugbox.settings import Settings
from plugbox.totals.slots import FairSlots

__all__ = ["FORBIDDEN_REQUEST_HEADERS", "FetchPolicy", "FetchService", "Resolver", "system_resolver"]

log = logging.getLogger("plugbox.net")

VERB = "net.fetch"
FORBIDDEN_REQUEST_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive"}
)
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript")

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """What the host knows about the calling plugin: its effective allowlist and its secrets."""

    allow: HostList
    secrets: Sequence[str] = field(default_factory=tuple)


_ANY_HOST = FetchPolicy(allow=HostList(any_host=True))


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for `host` (IPv4 and IPv6, TCP), in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(sockaddr[0])
        scope_id = sockaddr[3] if len(sockaddr) == 4 else 0  # AF_INET6 sockaddrs carry a scope id
        if scope_id:
            ip = ipaddress.IPv6Address(f"{ip}%{scope_id}")
        if ip not in out:
            out.append(ip)
    return out


class FetchService:
    def __init__(
        self,
        settings: Settings,
        policy_for: Callable[[str], FetchPolicy],
        *,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._policy_for = policy_for
        self._resolve = resolver
        self._ssl = ssl_context or ssl.create_default_context(cafile=certifi.where())
        try:
            self._exempt = HostList.parse(settings.fetch_exempt_hosts)
        except ValueError as exc:
            raise ConfigError("fetch_exempt_hosts", str(exc)) from None
        # A hard bound (no ceiling above it), refused at once past a plugin's share: `plugbox.totals.slots`.
        self.slots = FairSlots(settings.fetch_max_in_flight, settings.fetch_max_in_flight_per_plugin,
                               refuse_past_own=True, refusal=self._refusal)
        self.bodies = BodyBudget(settings.fetch_body_bytes_in_flight, settings.fetch_body_bytes_per_plugin)

    def _refusal(self, plugin_id: str, mine: int) -> str:
        share = self._settings.fetch_max_in_flight_per_plugin
        return (f"{VERB}: plugin {plugin_id!r} already has {mine} fetches in flight, its share of the host's "
                f"{self._settings.fetch_max_in_flight} (fetch_max_in_flight_per_plugin = {share})")

    @property
    def in_flight(self) -> int:
        return self.slots.in_flight

    @property
    def peak_in_flight(self) -> int:
        return self.slots.peak_in_flight

    @property
    def queued(self) -> int:
        """Fetches waiting for a host-wide slot."""
        return self.slots.queued

    def clamp_timeout_ms(self, timeout_ms: int) -> int:
        return min(max(timeout_ms, 1), self._settings.fetch_timeout_max_ms)

    async def fetch(
        self,
        plugin_id: str,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: str | bytes | None = None,
        timeout_ms: int | None = None,
    ) -> dict[str, Any]:
        policy = self._policy_for(plugin_id)
        try:
            return await self._fetch(plugin_id, policy, url, method.upper(), dict(headers or {}), body, timeout_ms,
                                     cap=self._settings.fetch_body_max_bytes)
        except CapabilityError as exc:
            message = redact(str(exc), policy.secrets)
            raise type(exc)(message) from None

    async def download(self, url: str, *, max_bytes: int, timeout_ms: int | None = None,
                       owner: str = "<host>") -> bytes:
        """GET `url` on the host's own behalf (no plugin allowlist: any public host) and return the
        body, at most `max_bytes`; CapabilityError naming the step that refused, or a non-200 answer.
        `owner` is whose share of the fetch slots it takes."""
        result = await self._fetch(owner, _ANY_HOST, url, "GET", {}, None, timeout_ms, cap=max_bytes, decode=False)
        if result["status"] != 200:
            raise CapabilityError(f"{VERB}: {parse_target(url).authority} answered {result['status']} "
                                  f"{result['status_text']}")
        body: bytes = result["body"]
        return body

    async def _fetch(
        self,
        plugin_id: str,
        policy: FetchPolicy,
        url: str,
        method: str,
        headers: dict[str, str],
        body: str | bytes | None,
        timeout_ms: int | None,
        *,
        cap: int,
        decode: bool = True,
    ) -> dict[str, Any]:
        target = self._target(url)
        if not policy.allow.permits(target.host, target.port):
            raise FetchRefused(
                f"{VERB}: host {target.authority} is not on the plugin's allowlist (net.allow / allowConfigHosts)"
            )
        exempt = self._exempt.permits(target.host, target.port)
        if target.ip is not None and not exempt:
            self._check_address(target, target.ip)
        request_headers = _request_headers(headers)
        budget_ms = self.clamp_timeout_ms(self._settings.fetch_timeout_ms if timeout_ms is None else timeout_ms)
        try:
            async with asyncio.timeout(budget_ms / 1000), self.slots.hold(plugin_id):
                addresses = await self._addresses(target, exempt)
                return await self._send(plugin_id, target, addresses, method, request_headers, body,
                                        budget_ms / 1000, cap, decode)
        except (TimeoutError, httpx.TimeoutException):
            raise CapabilityTimeout(f"{VERB}: {target.authority} did not answer within {budget_ms} ms") from None

    def _target(self, url: str) -> Target:
        try:
            return parse_target(url)
        except TargetError as exc:
            if exc.ip is not None and (reason := blocked_reason(exc.ip)):
                raise FetchRefused(f"{VERB}: address {exc.ip} is not public ({reason})") from None
            raise FetchRefused(f"{VERB}: invalid argument 'url': {exc}") from None

    def _check_address(self, target: Target, ip: IPAddress) -> None:
        reason = blocked_reason(ip)
        if reason is not None:
            named = "" if target.ip is not None else f" (resolved from {target.host})"
            raise FetchRefused(f"{VERB}: address {ip}{named} is not public ({reason}); refused before connecting")

    async def _addresses(self, target: Target, exempt: bool) -> list[IPAddress]:
        if target.ip is not None:
            return [target.ip]
        try:
            addresses = await self._resolve(target.host, target.port)
        except OSError as exc:
            raise CapabilityError(f"{VERB}: cannot resolve {target.host}: {exc.strerror or exc}") from None
        if not addresses:
            raise CapabilityError(f"{VERB}: {target.host} resolved to no address")
        if not exempt:
            for ip in addresses:  # every address, not just the first: the connection may fall back
                self._check_address(target, ip)
        return addresses

    def in_flight_of(self, plugin_id: str) -> int:
        """Fetches of `plugin_id` holding or waiting for a host-wide slot."""
        return self.slots.in_flight_of(plugin_id)

    async def _send(
        self,
        plugin_id: str,
        target: Target,
        addresses: list[IPAddress],
        method: str,
        headers: dict[str, str],
        body: str | bytes | None,
        budget_s: float,
        cap: int,
        decode: bool,
    ) -> dict[str, Any]:
        transport = PinnedTransport(target.host, target.port, addresses, self._ssl)
        content = body.encode() if isinstance(body, str) else body
        async with httpx.AsyncClient(
            transport=transport, follow_redirects=False, trust_env=False, timeout=budget_s
        ) as client:
            try:
                async with (client.stream(method, target.url, headers=headers, content=content) as response,
                            self.bodies.hold(plugin_id, self._body_size(response, target, cap))):
                    raw = await self._read_capped(response, target, cap)
                    return _result(response, raw if not decode else _body(response, raw))
            except httpx.TimeoutException:
                raise
            except httpx.HTTPError as exc:
                raise CapabilityError(
                    f"{VERB}: request to {target.authority} failed: {type(exc).__name__}: {exc}"
                ) from None

    @staticmethod
    def _body_size(response: httpx.Response, target: Target, cap: int) -> int:
        """The bytes to reserve for the body: what the server declares, else the cap."""
        declared = response.headers.get("content-length", "")
        if not declared.isdigit():
            return cap
        if int(declared) > cap:
            raise CapabilityError(f"{VERB}: response from {target.authority} is larger than the {cap}-byte cap")
        return int(declared)

    async def _read_capped(self, response: httpx.Response, target: Target, cap: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > cap:
                raise CapabilityError(
                    f"{VERB}: response from {target.authority} exceeded the {cap}-byte cap; connection closed"
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _request_headers(headers: dict[str, str]) -> dict[str, str]:
    lowered = {name.lower() for name in headers}
    bad = sorted(n for n in lowered if n in FORBIDDEN_REQUEST_HEADERS or n.startswith("proxy-"))
    if bad:
        raise CapabilityError(f"{VERB}: invalid argument 'headers': {bad[0]!r} is set by the host, not the plugin")
    out = dict(headers)
    if "accept-encoding" not in lowered:
        out["Accept-Encoding"] = "identity"
    if "user-agent" not in lowered:
        out["User-Agent"] = f"plugbox/{__version__}"
    return out


def _result(response: httpx.Response, body: str | bytes) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return {
        "ok": 200 <= response.status_code < 300,
        "status": response.status_code,
        "status_text": response.reason_phrase,
        "headers": headers,
        "body": body,
    }


def _body(response: httpx.Response, raw: bytes) -> str | bytes:
    media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    encoded = response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")
    textual = media.startswith("text/") or media in _TEXT_TYPES or media.endswith("+json") or media.endswith("+xml")
    if not textual or encoded:
        return raw
    try:
        return raw.decode(response.charset_encoding or "utf-8")
    except (UnicodeDecodeError, LookupError):
        return raw
