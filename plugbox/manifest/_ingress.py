"""The `ingress` section of a manifest (SPEC §2): the IngressRoute / IngressSignature types and
every rule on routes, signature schemes, headers, templates and the secret field.

Choices the spec leaves open, made here: `secretField` (default `webhookSecret`) names a
configSchema string field that must be marked secret. `template` is what the HMAC covers, with
placeholders `{id}` (the value of `dedupHeader`), `{timestamp}` (of `timestampHeader`, Unix seconds)
and `{body}` (the raw body), substituted literally; it must contain `{body}`, and `{id}`/`{timestamp}`
whenever `dedupHeader`/`timestampHeader` is set (a `dedupHeader` also needs a `timestampHeader`: ids
are remembered only for `toleranceSec`). Signature headers must be dedicated (`STANDARD_HEADERS` are
refused). Defaults per scheme are in `_signature`.

Checks only; verifying a request against a signature is `plugbox.api.ingress`'s job.
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
DEFAULT_TOLERANCE_SEC = 300

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


class IngressRoute(msgspec.Struct, frozen=True, kw_only=True):
    route: str
    signature: IngressSignature


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
        routes.append(
            IngressRoute(
                route=route, signature=_signature(signature, f"{field}.signature", schema, allow_unsigned)
            )
        )
    return tuple(routes)


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
        secret_field=_secret_field(sig, field, schema),
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


def _secret_field(sig: dict[str, Any], field: str, schema: ConfigSchema | None) -> str:
    name = _optional_str(sig, "secretField", DEFAULT_SECRET_FIELD, f"{field}.secretField")
    if schema is None or schema.field_type(name) not in ("string", "textarea"):
        raise ManifestError(
            f"{field}.secretField",
            "secret-field",
            f"configSchema has no string field {name!r} to hold the secret",
        )
    if name not in schema.secret_paths():
        raise ManifestError(
            f"{field}.secretField",
            "secret-field",
            f'configSchema field {name!r} must be marked "secret": true',
        )
    return name
