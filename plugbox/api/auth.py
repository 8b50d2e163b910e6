"""API keys and the two roles of the HTTP API.

A client presents its key in `X-API-Key` or `Authorization: Bearer <key>`. Keys from
`settings.api_keys` may read (list plugins, sessions, sent log, metrics) and inject loopback
messages; keys from `settings.admin_api_keys` may also manage (install, enable, disable, uninstall,
write config and active sessions). No key → 401; a read key on a management route → 403.

Keys are kept only as SHA-256 digests and every presented key is compared against every stored
digest with `hmac.compare_digest`, without an early exit, so neither the comparison nor the
position of a match leaks through timing. Hashing first also hides the stored keys' lengths.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.requests import Request

from plugbox.api._errors import ApiError

__all__ = ["ADMIN", "READ", "KeyRing", "presented_key", "require"]

READ = "read"
ADMIN = "admin"

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="plugbox"'}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    """The configured keys, by role. Empty keys are ignored (they would match an empty header)."""

    def __init__(self, api_keys: Iterable[str], admin_keys: Iterable[str]) -> None:
        self._admin = [_digest(k) for k in admin_keys if k]
        self._read = [_digest(k) for k in api_keys if k]

    def __bool__(self) -> bool:
        return bool(self._admin or self._read)

    def role(self, key: str | None) -> str | None:
        """ADMIN, READ or None, in time independent of which (if any) stored key matches."""
        if not key:
            return None
        presented = _digest(key)
        admin = read = False
        for stored in self._admin:
            admin |= hmac.compare_digest(presented, stored)
        for stored in self._read:
            read |= hmac.compare_digest(presented, stored)
        return ADMIN if admin else READ if read else None


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def require(request: Request, role: str) -> str:
    """Check the request's key for `role` (READ or ADMIN); returns the caller's role."""
    keys: KeyRing = request.app.state.keys
    key = presented_key(request)
    if key is None:
        raise ApiError(401, "missing API key: send it in X-API-Key or Authorization: Bearer",
                       headers=_CHALLENGE)
    have = keys.role(key)
    if have is None:
        raise ApiError(401, "invalid API key", headers=_CHALLENGE)
    if role == ADMIN and have != ADMIN:
        raise ApiError(403, "this operation needs an admin API key")
    return have
