"""The `ingress` section of a manifest (SPEC §2): the IngressRoute / IngressSignature types and
every rule on routes, signature schemes, headers, templates and the secret field.

Choices the spec leaves open, made here: `secretField` (default `webhookSecret`) names a
configSchema string field that must be marked secret. `template` is what the HMAC covers, with
placeholders `{id}` (the value of `dedupHeader`), `{timestamp}` (of `timestampHeader`, Unix seconds)
and `{body}` (the raw body), substituted literally; it must contain `{body}`, and `{id}`/`{timestamp}`
whenever `dedupHeader`/`timestampHeader` is set (a `dedupHeader` also needs a `timestampHeader`: ids
are remembered only for `toleranceSec`). Signature headers must be dedicated (`STANDARD_HEADERS` are
refused). Defaults per scheme are in `_signature`.

Ingress v2 route fields (OpenWA's shape): `mode` (`sync`, the default: the handler answers the sender;
`async`: the host verifies, queues durably and answers `ackStatus` at once, then hands the request to
the handler with retries), `maxBodyBytes` (under the operator's cap), `dedupOn` (`body`, `header:<Name>`
or `field:<dotted.path>` of the JSON body; a repeat within `dedupWindowSec` is acknowledged and not
delivered again) and `challenge` (the provider's GET handshake: `echoParam` is answered back when
`tokenParam` equals the secret config field `tokenField`), and OpenWA's `response.preflight`: host-side
checks run once the signature verifies, before anything is queued or run. The one check is
`session-alive`: on an instance bound to a session (a session instance, or an operator's instance
with a `sessionId`), a session the engine no longer has, or has in `error`, is answered 503 with
Retry-After; a session that is starting, showing a QR or reconnecting passes, as in OpenWA. OpenWA's
`response.ack` and `deadlineMs` are refused by name: `ackStatus` is plugbox's ack, and a body or
headers the provider expects would silently not be sent.

Checks only; verifying a request against a signature is `plugbox.api.ingress`'s job. The module runs
past 400 lines because every rule of the one manifest section stays together, where a reader of a
route field finds all of it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from plugbox.config_schema import ConfigSchema
from plugbox.errors import ManifestError
from plugbox.manifest._fields import _optional_str

ROUTE_MAX_CHARS = 128
HEADER_MAX_CHARS = 128
SIGNATURE_SCHEMES = ("hmac-sha256", "shared-secret", "standard-webhooks", "none")
ENCODINGS = ("hex", "base64")
DEFAULT_SECRET_FIELD = "webhookSecret"
DEFAULT_TOKEN_FIELD = "verifyToken"
DEFAULT_TOLERANCE_SEC = 300
MODES = ("sync", "async")
PREFLIGHTS = ("session-alive",)
DEDUP_PATH_MAX_SEGMENTS = 8
PARAM_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}", re.ASCII)
FIELD_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,128}", re.ASCII)

ROUTE_PATTERN = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
HEADER_PATTERN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)  # RFC 9110 token
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# Headers a browser, a proxy or the HTTP stack sets or gives meaning to, and the API's own
# credentials: a signature carried in one of them could be produced by a plain form POST (a
# `Content-Type` "signature") or leak the operator's key to the plugin. Signature, timestamp and
# delivery-id headers must be dedicated ones (X-Signature, webhook-id...), which a cross-site page
# cannot send without a CORS preflight the API never grants.
STANDARD_HEADERS = frozenset({
    "accept", "accept-charset", "accept-encoding", "accept-language", "authorization", "cache-control",
    "connection", "content-disposition", "content-encoding", "content-language", "content-length",
    "content-location", "content-md5", "content-range", "content-type", "cookie", "date", "dnt", "expect",
    "forwarded", "from", "host", "keep-alive", "max-forwards", "origin", "pragma", "priority", "range",
    "referer", "te", "trailer", "transfer-encoding", "upgrade", "upgrade-insecure-requests", "user-agent",
    "via", "warning", "x-api-key", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
    "x-real-ip", "x-requested-with",
})
STANDARD_HEADER_PREFIXES = ("sec-", "proxy-", "access-control-", "if-", "accept-", "content-")


class IngressSignature(msgspec.Struct, frozen=True, kw_only=True):
    """How an ingress request proves it comes from the sender that knows the secret.

    - `hmac-sha256`: `header` holds `prefix` + HMAC-SHA256(secret, template) in `encoding`.
      `template` defaults to `{timestamp}.{body}` with a `timestampHeader`, else `{body}`.
    - `shared-secret`: `header` holds `prefix` + the secret itself (constant-time compare);
      `template`, `encoding` and `timestampHeader` are ignored (only type-checked).
    - `standard-webhooks`: the Standard Webhooks spec; headers default to `webhook-signature`,
      `webhook-timestamp`, `webhook-id` (override for e.g. `svix-*`); base64 over `{id}.{timestamp}.{body}`;
      the signature header is the spec's space-separated `v1,<sig>` list.
    - `none`: unsigned; only when the operator allows unsigned ingress.
    A request whose `timestampHeader` (Unix seconds) is more than `tolerance_sec` away is refused.
    """

    scheme: str
    header: str | None = None
    prefix: str = ""
    timestamp_header: str | None = None
    tolerance_sec: int = DEFAULT_TOLERANCE_SEC
    secret_field: str | None = None
    encoding: str = "hex"
    template: str = "{body}"
    dedup_header: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "header": self.header,
            "prefix": self.prefix,
            "timestampHeader": self.timestamp_header,
            "toleranceSec": self.tolerance_sec,
            "secretField": self.secret_field,
            "encoding": self.encoding,
            "template": self.template,
            "dedupHeader": self.dedup_header,
        }


class IngressChallenge(msgspec.Struct, frozen=True, kw_only=True):
    """The provider's subscription handshake: a GET whose `token_param` equals the secret config field
    `token_field` is answered with the value of `echo_param` (e.g. Meta's `hub.verify_token` and
    `hub.challenge`)."""

    echo_param: str
    token_param: str
    token_field: str

    def to_json(self) -> dict[str, Any]:
        return {"echoParam": self.echo_param, "tokenParam": self.token_param, "tokenField": self.token_field}


class IngressRoute(msgspec.Struct, frozen=True, kw_only=True):
    """One declared route. `dedup_on` is `body`, `header:<name>` or `field:<dotted.path>`;
    `dedup_window_sec` None means the operator's `ingress_dedup_window_sec`; `max_body_bytes` None
    means the operator's `ingress_body_max_bytes` (the smaller of the two always applies)."""

    route: str
    signature: IngressSignature
    mode: str = "sync"
    max_body_bytes: int | None = None
    dedup_on: str | None = None
    dedup_window_sec: int | None = None
    challenge: IngressChallenge | None = None
    ack_status: int = 202
    preflight: tuple[str, ...] = ()

    @property
    def is_async(self) -> bool:
        return self.mode == "async"

    def to_json(self) -> dict[str, Any]:
        return {"route": self.route, "signature": self.signature.to_json(), "mode": self.mode,
                "maxBodyBytes": self.max_body_bytes, "dedupOn": self.dedup_on, "dedupWindowSec": self.dedup_window_sec,
                "challenge": None if self.challenge is None else self.challenge.to_json(),
                "ackStatus": self.ack_status if self.is_async else None,
                "response": {"preflight": list(self.preflight)} if self.preflight else None}


def _ingress(
    doc: dict[str, Any], permissions: frozenset[str], schema: ConfigSchema | None, allow_unsigned: bool
) -> tuple[IngressRoute, ...]:
    entries = doc.get("ingress")
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ManifestError("ingress", "type", "must be a list of routes")
    if entries and "webhook:ingress" not in permissions:
        raise ManifestError(
            "ingress", "permission", "declaring ingress routes needs the 'webhook:ingress' permission"
        )
    routes: list[IngressRoute] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        field = f"ingress[{index}]"
        if not isinstance(entry, dict):
            raise ManifestError(field, "type", "must be a JSON object")
        route = _route(entry, field)
        if route in seen:
            raise ManifestError(f"{field}.route", "duplicate", f"route {route!r} is declared twice")
        seen.add(route)
        signature = entry.get("signature")
        if signature is None:
            raise ManifestError(f"{field}.signature", "required", "every ingress route needs a signature")
        if not isinstance(signature, dict):
            raise ManifestError(f"{field}.signature", "type", "must be a JSON object")
        mode = _optional_str(entry, "mode", "sync", f"{field}.mode")
        if mode not in MODES:
            raise ManifestError(f"{field}.mode", "mode", f"{mode!r} is not one of {MODES}")
        if entry.get("ackStatus") is not None and mode != "async":
            raise ManifestError(f"{field}.ackStatus", "not-applicable",
                                "only an async route answers with ackStatus; a sync route answers what its handler "
                                "returns")
        routes.append(
            IngressRoute(
                route=route, signature=_signature(signature, f"{field}.signature", schema, allow_unsigned),
                mode=mode,
                max_body_bytes=_positive(entry, "maxBodyBytes", field),
                dedup_on=_dedup_on(entry, field),
                dedup_window_sec=_positive(entry, "dedupWindowSec", field),
                challenge=_challenge(entry, field, schema),
                ack_status=_ack_status(entry, field),
                preflight=_preflight(entry, field),
            )
        )
    return tuple(routes)


def _positive(entry: dict[str, Any], key: str, field: str) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ManifestError(f"{field}.{key}", "range", f"must be an integer > 0, not {value!r}")
    return value


def _ack_status(entry: dict[str, Any], field: str) -> int:
    value = entry.get("ackStatus")
    if value is None:
        return 202
    if not isinstance(value, int) or isinstance(value, bool) or not 200 <= value <= 299:
        raise ManifestError(f"{field}.ackStatus", "range", f"must be a 2xx status, not {value!r}")
    return value


def _preflight(entry: dict[str, Any], field: str) -> tuple[str, ...]:
    value = entry.get("response")
    if value is None:
        return ()
    where = f"{field}.response"
    if not isinstance(value, dict):
        raise ManifestError(where, "type", "must be a JSON object")
    for key in value:
        if key in ("ack", "deadlineMs"):
            raise ManifestError(f"{where}.{key}", "unsupported",
                                "OpenWA's declarative ack is not supported here: an async route answers "
                                "ackStatus with {id, status}; drop it or use ackStatus")
        if key != "preflight":
            raise ManifestError(f"{where}.{key}", "unknown", "unknown field; expected preflight")
    checks = value.get("preflight", [])
    if (not isinstance(checks, list) or len(checks) > len(PREFLIGHTS) or len(set(map(str, checks))) != len(checks)
            or any(c not in PREFLIGHTS for c in checks)):
        raise ManifestError(f"{where}.preflight", "preflight",
                            f"must be a list of distinct checks from {PREFLIGHTS}, not {checks!r}")
    return tuple(checks)


def _dedup_on(entry: dict[str, Any], field: str) -> str | None:
    value = entry.get("dedupOn")
    if value is None:
        return None
    where = f"{field}.dedupOn"
    if not isinstance(value, str):
        raise ManifestError(where, "type", "must be a string: 'body', 'header:<Name>' or 'field:<dotted.path>'")
    kind, _, name = value.partition(":")
    if value == "body":
        return value
    if kind == "header" and len(name) <= HEADER_MAX_CHARS and HEADER_PATTERN.fullmatch(name):
        return f"header:{name.lower()}"
    if kind == "field":
        segments = name.split(".")
        if len(segments) <= DEDUP_PATH_MAX_SEGMENTS and all(FIELD_SEGMENT.fullmatch(p) for p in segments):
            return value
    raise ManifestError(where, "dedup", f"{value!r} must be 'body', 'header:<Name>' or 'field:<dotted.path>' "
                        f"(at most {DEDUP_PATH_MAX_SEGMENTS} segments of letters, digits, '_', '-')")


def _challenge(entry: dict[str, Any], field: str, schema: ConfigSchema | None) -> IngressChallenge | None:
    value = entry.get("challenge")
    if value is None:
        return None
    where = f"{field}.challenge"
    if not isinstance(value, dict):
        raise ManifestError(where, "type", "must be a JSON object")
    params = {}
    for key in ("echoParam", "tokenParam"):
        param = value.get(key)
        if not isinstance(param, str) or not PARAM_PATTERN.fullmatch(param):
            raise ManifestError(f"{where}.{key}", "param", "is required: a query parameter name "
                                "(letters, digits, '.', '_', '-', at most 128)")
        params[key] = param
    if params["echoParam"] == params["tokenParam"]:
        raise ManifestError(f"{where}.echoParam", "distinct", "must differ from tokenParam")
    return IngressChallenge(echo_param=params["echoParam"], token_param=params["tokenParam"],
                            token_field=_secret_field(value, where, schema, "tokenField", DEFAULT_TOKEN_FIELD))


def _route(entry: dict[str, Any], field: str) -> str:
    route = entry.get("route")
    if route is None:
        raise ManifestError(f"{field}.route", "required", "is required")
    if not isinstance(route, str):
        raise ManifestError(f"{field}.route", "type", "must be a string")
    if not route:
        raise ManifestError(f"{field}.route", "empty", "must not be empty")
    # '.' and '..' would be rewritten by URL normalisation on the way to /ingress/{plugin}/{route}.
    if len(route) > ROUTE_MAX_CHARS or not ROUTE_PATTERN.fullmatch(route) or route in (".", ".."):
        raise ManifestError(
            f"{field}.route",
            "pattern",
            f"{route!r} must match ^[A-Za-z0-9._-]+$, at most {ROUTE_MAX_CHARS} chars",
        )
    return route


def _signature(
    sig: dict[str, Any], field: str, schema: ConfigSchema | None, allow_unsigned: bool
) -> IngressSignature:
    scheme = sig.get("scheme")
    if scheme is None:
        raise ManifestError(f"{field}.scheme", "required", "is required")
    if not isinstance(scheme, str) or scheme not in SIGNATURE_SCHEMES:
        raise ManifestError(f"{field}.scheme", "scheme", f"{scheme!r} is not one of {SIGNATURE_SCHEMES}")
    if scheme == "none":
        if not allow_unsigned:
            raise ManifestError(
                f"{field}.scheme", "unsigned", "unsigned ingress is not allowed by the operator"
            )
        return IngressSignature(scheme="none", tolerance_sec=_tolerance(sig, field))
    standard = scheme == "standard-webhooks"
    header = _header(sig, "header", field, "webhook-signature" if standard else None)
    if header is None:
        raise ManifestError(
            f"{field}.header", "required", f"scheme {scheme!r} needs the signature header name"
        )
    timestamp_header = _header(sig, "timestampHeader", field, "webhook-timestamp" if standard else None)
    dedup_header = _header(sig, "dedupHeader", field, "webhook-id" if standard else None)
    encoding = _optional_str(sig, "encoding", "base64" if standard else "hex", f"{field}.encoding")
    # The default covers everything declared: an id or a timestamp the signature does not cover
    # can be changed by whoever replays a captured request.
    default_template = ".".join(
        p for p, h in (("{id}", dedup_header), ("{timestamp}", timestamp_header), ("{body}", True)) if h)
    template = _optional_str(
        sig, "template", "{id}.{timestamp}.{body}" if standard else default_template, f"{field}.template"
    )
    if standard and (encoding, template) != ("base64", "{id}.{timestamp}.{body}"):
        raise ManifestError(
            f"{field}.template" if template != "{id}.{timestamp}.{body}" else f"{field}.encoding",
            "not-applicable",
            "standard-webhooks fixes encoding 'base64' and template '{id}.{timestamp}.{body}'",
        )
    if scheme != "shared-secret":  # shared-secret compares the header to the secret: no digest
        if encoding not in ENCODINGS:
            raise ManifestError(f"{field}.encoding", "encoding", f"{encoding!r} is not one of {ENCODINGS}")
        _check_template(template, f"{field}.template", timestamp_header, dedup_header)
    prefix = _optional_str(sig, "prefix", "", f"{field}.prefix")
    if len(prefix) > HEADER_MAX_CHARS:
        raise ManifestError(f"{field}.prefix", "length", f"is longer than {HEADER_MAX_CHARS} characters")
    return IngressSignature(
        scheme=scheme,
        header=header,
        prefix=prefix,
        timestamp_header=timestamp_header,
        tolerance_sec=_tolerance(sig, field),
        secret_field=_secret_field(sig, field, schema, "secretField", DEFAULT_SECRET_FIELD),
        encoding=encoding,
        template=template,
        dedup_header=dedup_header,
    )


def _header(sig: dict[str, Any], key: str, field: str, default: str | None) -> str | None:
    value = sig.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ManifestError(f"{field}.{key}", "type", "must be a string")
    if len(value) > HEADER_MAX_CHARS or not HEADER_PATTERN.fullmatch(value):
        raise ManifestError(f"{field}.{key}", "header", f"{value!r} is not an HTTP header name")
    lowered = value.lower()
    if lowered in STANDARD_HEADERS or lowered.startswith(STANDARD_HEADER_PREFIXES):
        raise ManifestError(f"{field}.{key}", "dedicated",
                            f"{value!r} is a standard HTTP header; use a header of its own (e.g. X-Signature)")
    return value


def _tolerance(sig: dict[str, Any], field: str) -> int:
    value = sig.get("toleranceSec", DEFAULT_TOLERANCE_SEC)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ManifestError(f"{field}.toleranceSec", "type", "must be an integer number of seconds")
    if value <= 0:
        raise ManifestError(f"{field}.toleranceSec", "range", f"must be > 0, not {value}")
    return value


def _check_template(
    template: str, field: str, timestamp_header: str | None, dedup_header: str | None
) -> None:
    needs = {"id": ("dedupHeader", dedup_header), "timestamp": ("timestampHeader", timestamp_header)}
    placeholders = PLACEHOLDER.findall(template)
    for name, (key, header) in needs.items():
        if header is not None and name not in placeholders:
            raise ManifestError(field, "template", f"must contain {{{name}}}: {key} is set, and a value the "
                                "signature does not cover lets a captured delivery be replayed")
    if dedup_header is not None and timestamp_header is None:
        raise ManifestError(field.rsplit(".", 1)[0] + ".timestampHeader", "required",
                            "dedupHeader needs a timestampHeader: delivery ids are remembered for toleranceSec, "
                            "so only a signed timestamp keeps an older delivery out")
    for name in placeholders:
        if name != "body" and name not in needs:
            raise ManifestError(
                field, "template", f"unknown placeholder {{{name}}}; use {{id}}, {{timestamp}}, {{body}}"
            )
        if name in needs and needs[name][1] is None:
            raise ManifestError(field, "template", f"{{{name}}} needs {needs[name][0]} to be set")
    if "body" not in placeholders:
        raise ManifestError(
            field, "template", "must contain {body}, or the signature would not cover the body"
        )


def _secret_field(doc: dict[str, Any], field: str, schema: ConfigSchema | None, key: str, default: str) -> str:
    name = _optional_str(doc, key, default, f"{field}.{key}")
    if schema is None or schema.field_type(name) not in ("string", "textarea"):
        raise ManifestError(
            f"{field}.{key}",
            "secret-field",
            f"configSchema has no string field {name!r} to hold the secret",
        )
    if name not in schema.secret_paths():
        raise ManifestError(
            f"{field}.{key}",
            "secret-field",
            f'configSchema field {name!r} must be marked "secret": true',
        )
    return name
