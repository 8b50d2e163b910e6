"""Standard Webhooks signatures on outbound deliveries: secrets and the three headers.

The signature is the `standardwebhooks` package's (the reference implementation published by the
Standard Webhooks authors): `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed
with the base64-decoded part of a `whsec_` secret. This module only makes secrets and headers; it
does no I/O and knows nothing about subscriptions or the queue.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import UTC, datetime

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from plugbox.errors import ConfigError

__all__ = ["SECRET_PREFIX", "check_secret", "headers", "new_secret"]

SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 32
_MIN_KEY_BYTES = 16  # shorter keys make the HMAC guessable; the spec recommends 24 to 64 bytes
_MAX_SECRET_CHARS = 256


def new_secret() -> str:
    """A fresh `whsec_` secret with 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def check_secret(secret: str) -> str:
    """`secret` if it is a usable `whsec_<base64>` secret of at least 16 bytes; ConfigError otherwise."""
    if not secret.startswith(SECRET_PREFIX) or len(secret) > _MAX_SECRET_CHARS:
        raise ConfigError("secret", f"must be '{SECRET_PREFIX}' followed by base64, at most {_MAX_SECRET_CHARS} chars")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("secret", f"the part after '{SECRET_PREFIX}' is not base64") from None
    if len(key) < _MIN_KEY_BYTES:
        raise ConfigError("secret", f"the key must be at least {_MIN_KEY_BYTES} bytes")
    return secret


def headers(secret: str, delivery_id: str, timestamp: float, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt. The timestamp is the attempt's (whole seconds),
    so a receiver's tolerance window holds for a retry hours after the event."""
    try:
        webhook = Webhook(secret)
    except EmptyWebhookSecretError:
        raise ConfigError("secret", "is empty") from None
    moment = datetime.fromtimestamp(int(timestamp), UTC)
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": webhook.sign(delivery_id, moment, body.decode()),
    }
