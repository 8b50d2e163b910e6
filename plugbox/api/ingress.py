"""Ingress signature verification (SPEC §2 `ingress`, §9): is this request from the sender that knows the
plugin's webhook secret, is it fresh, and have we seen it before?

Pure functions over (signature spec, secret, headers, raw body, clock); no I/O, no plugin code. The
HTTP handler (`plugbox.api.routes.ingress`) reads the body under its cap, calls `verify`, then asks the
`ReplayGuard` about the delivery id, and only then dispatches to the plugin.

Schemes (see `plugbox.manifest.IngressSignature` for the manifest side):
- `hmac-sha256`: `header` = `prefix` + HMAC-SHA256(secret, template) in hex (case-insensitive) or
  base64. The template's `{id}`, `{timestamp}`, `{body}` are substituted literally with the dedup
  header value, the timestamp header value and the raw body bytes.
- `shared-secret`: `header` = `prefix` + secret, compared in constant time.
- `standard-webhooks`: key = base64-decoded part after `whsec_` (a secret without that prefix is used
  as raw UTF-8 bytes); the signature header is a space-separated list of `v1,<base64>`; any one match
  passes. `prefix` is not used.
- `none`: accepted only while the operator allows unsigned ingress.

Every scheme with a `timestampHeader` requires it, as Unix seconds, within `tolerance_sec` of now (both
directions). A route with a dedup header requires it (400 without: a delivery with no id could be
processed any number of times); the guard refuses an id seen within the tolerance window, and the
manifest makes the signature cover both id and timestamp, so an old delivery cannot come back
under a new id or a new timestamp. The guard is bounded (`ingress_dedup_max_entries` ids for all
plugins) and shared fairly: past the bound the plugin remembering the most ids forgets its oldest.
Whoever holds a plugin's secret may post fresh ids to its routes as fast as they like; that only
reopens replay for that plugin's own oldest deliveries, never for a plugin within its share (the
bound over the plugins remembering any).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from plugbox.errors import IngressRefused
from plugbox.manifest import IngressSignature

__all__ = ["IngressRefused", "ReplayGuard", "dedup_digest", "secret_at", "sign", "verify"]

_PLACEHOLDER = re.compile(r"\{(id|timestamp|body)\}")
_WHSEC = "whsec_"
_MAX_SIGNATURES = 16  # entries in a standard-webhooks signature list; more is not a real sender
_MAX_DELIVERY_ID = 256  # characters; ids are remembered by the replay guard


def secret_at(config: Mapping[str, Any], path: str) -> str | None:
    """The string at dotted `path` in `config`, or None when unset or empty."""
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node if isinstance(node, str) and node else None


def dedup_digest(dedup_on: str, headers: Mapping[str, str], body: bytes, doc: Any) -> str:
    """The digest of a verified request's `dedupOn` value (`body`, `header:<name>` with a lower-case
    name, `field:<dotted.path>` into the parsed JSON `doc`); IngressRefused 400 when it has none. Only
    the digest is kept, so a key is bounded whatever the sender put in it."""
    kind, _, name = dedup_on.partition(":")
    if kind == "body":
        material = body
    elif kind == "header":
        value = headers.get(name)
        if not value:
            raise IngressRefused(400, "missing_dedup", f"missing dedup header {name!r}")
        material = value.encode("utf-8", "replace")
    else:
        node = doc
        for part in name.split("."):
            if isinstance(node, Mapping):
                node = node.get(part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = None
        if isinstance(node, bool) or not isinstance(node, str | int) or node == "":
            raise IngressRefused(400, "missing_dedup", f"the JSON body has no string or integer at {name!r}")
        material = str(node).encode("utf-8", "replace")
    return hashlib.sha256(kind.encode() + b"\0" + material).hexdigest()


def _signed_content(template: str, *, body: bytes, id: str | None, timestamp: str | None) -> bytes:
    values = {"body": body, "id": (id or "").encode("latin-1", "replace"),
              "timestamp": (timestamp or "").encode("latin-1", "replace")}
    out: list[bytes] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        out.append(template[pos:match.start()].encode("utf-8"))
        out.append(values[match.group(1)])
        pos = match.end()
    out.append(template[pos:].encode("utf-8"))
    return b"".join(out)


def _standard_key(secret: str) -> bytes:
    if secret.startswith(_WHSEC):
        try:
            return base64.b64decode(secret[len(_WHSEC):], validate=True)
        except (binascii.Error, ValueError):
            raise IngressRefused(503, "misconfigured",
                                 "the plugin's webhook secret is not a valid whsec_ base64 secret") from None
    return secret.encode("utf-8")


def sign(sig: IngressSignature, secret: str, body: bytes, *, id: str | None = None,
         timestamp: str | None = None) -> str:
    """The signature header value a correct sender would send (used by tests and tooling)."""
    if sig.scheme == "shared-secret":
        return sig.prefix + secret
    if sig.scheme == "standard-webhooks":
        digest = hmac.new(_standard_key(secret), _signed_content(sig.template, body=body, id=id,
                          timestamp=timestamp), hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode()
    digest = hmac.new(secret.encode("utf-8"), _signed_content(sig.template, body=body, id=id,
                      timestamp=timestamp), hashlib.sha256).digest()
    encoded = digest.hex() if sig.encoding == "hex" else base64.b64encode(digest).decode()
    return sig.prefix + encoded


def _header(headers: Mapping[str, str], name: str | None) -> str | None:
    if name is None:
        return None
    value = headers.get(name.lower())
    return value.strip() if value is not None and value.strip() else None


def _check_timestamp(sig: IngressSignature, value: str | None, now: float) -> None:
    if sig.timestamp_header is None:
        return
    if value is None:
        raise IngressRefused(401, "missing_timestamp", f"missing timestamp header {sig.timestamp_header!r}")
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise IngressRefused(401, "bad_timestamp",
                             f"timestamp header {sig.timestamp_header!r} is not Unix seconds")
    if abs(now - int(value)) > sig.tolerance_sec:
        raise IngressRefused(401, "expired",
                             f"timestamp is more than {sig.tolerance_sec} s away from the server clock")


def _decode_digest(text: str, encoding: str) -> bytes | None:
    try:
        if encoding == "hex":
            return bytes.fromhex(text)
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None


def _check_hmac(sig: IngressSignature, secret: str, presented: str, content: bytes) -> bool:
    if not presented.startswith(sig.prefix):
        return False
    given = _decode_digest(presented[len(sig.prefix):], sig.encoding)
    expected = hmac.new(secret.encode("utf-8"), content, hashlib.sha256).digest()
    return given is not None and hmac.compare_digest(given, expected)


def _check_standard(secret: str, presented: str, content: bytes) -> bool:
    expected = hmac.new(_standard_key(secret), content, hashlib.sha256).digest()
    matched = False
    for item in presented.split()[:_MAX_SIGNATURES]:
        version, _, value = item.partition(",")
        if version != "v1":
            continue
        given = _decode_digest(value, "base64")
        matched |= given is not None and hmac.compare_digest(given, expected)
    return matched


def verify(
    sig: IngressSignature,
    secret: str | None,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    allow_unsigned: bool,
) -> str | None:
    """Raise IngressRefused unless the request is authentic and fresh; return its delivery id
    (the dedup header's value) or None. `headers` must have lower-case names."""
    delivery_id = _delivery_id(sig, headers)
    if sig.scheme == "none":
        if not allow_unsigned:
            raise IngressRefused(401, "unsigned", "unsigned ingress is not allowed on this server")
        timestamp = _header(headers, sig.timestamp_header)
        _check_timestamp(sig, timestamp, now)
        return delivery_id
    if secret is None:
        raise IngressRefused(503, "misconfigured",
                             f"the plugin has no webhook secret configured ({sig.secret_field!r})")
    presented = _header(headers, sig.header)
    if presented is None:
        raise IngressRefused(401, "unsigned", f"missing signature header {sig.header!r}")
    timestamp = _header(headers, sig.timestamp_header)
    _check_timestamp(sig, timestamp, now)
    if sig.scheme == "shared-secret":
        ok = hmac.compare_digest(presented.encode("utf-8", "replace"), (sig.prefix + secret).encode("utf-8"))
    else:
        content = _signed_content(sig.template, body=body, id=delivery_id, timestamp=timestamp)
        if sig.scheme == "standard-webhooks":
            ok = _check_standard(secret, presented, content)
        else:
            ok = _check_hmac(sig, secret, presented, content)
    if not ok:
        raise IngressRefused(401, "bad_signature", "signature does not match")
    return delivery_id


def _delivery_id(sig: IngressSignature, headers: Mapping[str, str]) -> str | None:
    if sig.dedup_header is None:
        return None
    value = _header(headers, sig.dedup_header)
    if value is None:
        raise IngressRefused(400, "missing_id", f"missing delivery id header {sig.dedup_header!r}")
    if len(value) > _MAX_DELIVERY_ID:
        raise IngressRefused(400, "bad_id", f"delivery id longer than {_MAX_DELIVERY_ID} characters")
    return value


class ReplayGuard:
    """Delivery ids seen recently, each remembered for its route's tolerance window; bounded for all
    plugins together, the plugin remembering the most losing its oldest first. A key is
    (`plugin/instance`, route, delivery id); plugin ids hold no `/`."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._size = 0
        self._seen: dict[str, OrderedDict[tuple[str, str, str], float]] = {}  # plugin -> its ids, oldest first

    def __len__(self) -> int:
        return self._size

    def claim(self, key: tuple[str, str, str], ttl: float, now: float) -> bool:
        """Remember `key` until now + ttl; False if it is already remembered (a replay)."""
        seen = self._seen.setdefault(key[0].partition("/")[0], OrderedDict())
        expires = seen.get(key)
        if expires is not None and expires > now:
            return False
        if expires is None:
            self._size += 1
        seen[key] = now + ttl
        seen.move_to_end(key)
        while self._size > self._max:
            owner, fullest = max(self._seen.items(), key=lambda item: len(item[1]))
            fullest.popitem(last=False)
            self._size -= 1
            if not fullest:
                del self._seen[owner]
        return True

    def release(self, key: tuple[str, str, str]) -> None:
        """Forget `key`, so that the sender may retry a delivery we failed to process."""
        owner = key[0].partition("/")[0]
        seen = self._seen.get(owner)
        if seen is not None and seen.pop(key, None) is not None:
            self._size -= 1
            if not seen:
                del self._seen[owner]
