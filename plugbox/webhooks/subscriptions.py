"""What an outbound webhook subscription is, and how an operator's request for one is checked.

A subscription names a URL, the host events it wants (plugbox event names, or `*` for all of them)
and the secret its deliveries are signed with. `webhook:*` events are never deliverable: a delivery
fires them, so subscribing to them would feed the queue from itself. This module is pure: parsing
and matching, no database, no network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from plugbox.errors import ConfigError, TargetError
from plugbox.events import EVENTS, WEBHOOK_EVENTS
from plugbox.net.urls import parse_target
from plugbox.webhooks.signing import check_secret, new_secret

__all__ = ["DELIVERABLE_EVENTS", "Subscription", "SubscriptionSpec", "parse_spec"]

DELIVERABLE_EVENTS: frozenset[str] = EVENTS - WEBHOOK_EVENTS
_URL_MAX_CHARS = 2048
_DESCRIPTION_MAX_CHARS = 512
_FIELDS = ("url", "events", "secret", "enabled", "description")


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """One stored subscription. `secret` never leaves the host through the API after creation."""

    id: str
    url: str
    events: tuple[str, ...]
    secret: str
    enabled: bool
    description: str
    created_at: float

    def wants(self, event: str) -> bool:
        return self.enabled and event in DELIVERABLE_EVENTS and ("*" in self.events or event in self.events)

    def public(self) -> dict[str, Any]:
        """The API's view: everything but the secret."""
        return {"id": self.id, "url": self.url, "events": list(self.events), "enabled": self.enabled,
                "description": self.description, "createdAt": self.created_at}


class SubscriptionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A checked create or update request: the fields given (None: keep, or the default on create)."""

    url: str | None = None
    events: tuple[str, ...] | None = None
    secret: str | None = None
    enabled: bool | None = None
    description: str | None = None

    def complete(self) -> SubscriptionSpec:
        """A create request: url and events are required; the rest take their defaults."""
        if self.url is None:
            raise ConfigError("url", "is required")
        if self.events is None:
            raise ConfigError("events", "is required")
        return msgspec.structs.replace(
            self,
            secret=self.secret if self.secret is not None else new_secret(),
            enabled=True if self.enabled is None else self.enabled,
            description=self.description or "",
        )


def parse_spec(doc: Any) -> SubscriptionSpec:
    """Check an operator's JSON object; ConfigError names the field at fault."""
    if not isinstance(doc, Mapping):
        raise ConfigError("body", "must be a JSON object")
    unknown = sorted(set(doc) - set(_FIELDS))
    if unknown:
        raise ConfigError(str(unknown[0]), f"unknown field; expected some of {', '.join(_FIELDS)}")
    return SubscriptionSpec(
        url=_url(doc["url"]) if "url" in doc else None,
        events=_events(doc["events"]) if "events" in doc else None,
        secret=_secret(doc["secret"]) if "secret" in doc else None,
        enabled=_flag(doc["enabled"]) if "enabled" in doc else None,
        description=_description(doc["description"]) if "description" in doc else None,
    )


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > _URL_MAX_CHARS:
        raise ConfigError("url", f"must be a non-empty string of at most {_URL_MAX_CHARS} chars")
    try:
        parse_target(value)  # the delivery's own parser: what passes here is what the guard will see
    except TargetError as exc:
        raise ConfigError("url", str(exc)) from None
    return value


def _events(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(e, str) for e in value):
        raise ConfigError("events", "must be a non-empty list of event names, or [\"*\"]")
    for event in value:
        if event in WEBHOOK_EVENTS:
            raise ConfigError("events", f"{event!r} cannot be delivered: deliveries fire it themselves")
        if event != "*" and event not in DELIVERABLE_EVENTS:
            raise ConfigError("events", f"unknown event {event!r}")
    return tuple(dict.fromkeys(value))


def _secret(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError("secret", "must be a string")
    return check_secret(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError("enabled", "must be true or false")
    return value


def _description(value: Any) -> str:
    if not isinstance(value, str) or len(value) > _DESCRIPTION_MAX_CHARS:
        raise ConfigError("description", f"must be a string of at most {_DESCRIPTION_MAX_CHARS} chars")
    return value
