"""Is a webhook call really from Meta? The two checks of the Cloud API's webhook contract, as pure
functions over (configured secret, what the request carried):

- `check_handshake`: the subscription GET (`hub.mode=subscribe`, `hub.verify_token`, `hub.challenge`)
  answers the challenge only when the token matches the operator's verify token.
- `check_signature`: every POST carries `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret,
  raw body)>`; missing is 401, wrong is 403, both before anything in the body is parsed.

Comparisons are constant-time (`hmac.compare_digest`). Refusals raise `IngressRefused` with the
status the route answers; messages never echo a secret or the signature received.
"""

from __future__ import annotations

import hashlib
import hmac

from plugbox.errors import IngressRefused

__all__ = ["CHALLENGE_MAX_CHARS", "SIGNATURE_HEADER", "check_handshake", "check_signature", "sign"]

SIGNATURE_HEADER = "X-Hub-Signature-256"
_PREFIX = "sha256="
CHALLENGE_MAX_CHARS = 256  # Meta sends a short number; anything longer is not Meta


def sign(app_secret: str, body: bytes) -> str:
    """The header value Meta would send for `body` (tests and tooling)."""
    return _PREFIX + hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def check_signature(app_secret: str, header: str | None, body: bytes) -> None:
    if not header:
        raise IngressRefused(401, "unsigned", f"missing {SIGNATURE_HEADER} header")
    expected = sign(app_secret, body)
    # Compare the whole header, prefix included: a different scheme is as wrong as a different digest.
    if not hmac.compare_digest(header.strip().lower().encode("ascii", "replace"), expected.encode("ascii")):
        raise IngressRefused(403, "bad_signature", f"{SIGNATURE_HEADER} does not match the body")


def check_handshake(verify_token: str, mode: str | None, token: str | None, challenge: str | None) -> str:
    """The challenge to echo back, or IngressRefused(403)."""
    if mode != "subscribe":
        raise IngressRefused(403, "bad_handshake", "hub.mode must be 'subscribe'")
    if token is None or not hmac.compare_digest(token.encode("utf-8"), verify_token.encode("utf-8")):
        raise IngressRefused(403, "bad_handshake", "hub.verify_token does not match")
    if not challenge or len(challenge) > CHALLENGE_MAX_CHARS or not challenge.isprintable():
        raise IngressRefused(400, "bad_handshake",
                             f"hub.challenge must be 1-{CHALLENGE_MAX_CHARS} printable characters")
    return challenge
