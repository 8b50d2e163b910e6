"""The plugin package (SPEC §2): reading `manifest.json`, checking every rule, and the typed Manifest
the rest of plugbox works from. Also finds candidate plugin directories.

Every failure is a ManifestError naming the field (a dotted path like `ingress[0].signature.scheme`)
and a short rule name. Unknown top-level fields are ignored for forward compatibility (as are unknown
keys inside `net` and `signature`); the types of known fields are always checked, and a JSON null
counts as absent.

Choices the spec leaves open, made here:
- `id` is at most 64 characters; matching is ASCII-only (re.ASCII), so a Unicode look-alike such as
  the Kelvin sign cannot pass as `k`; reserved ids compare case-insensitively.
- `main` must end in `.py` and be a regular file. With no plugin directory (built-ins) only the
  lexical checks run (relative, no escape by `..`).
- `sdkVersion` must be one the host supports (`SUPPORTED_SDK_VERSIONS`).
- `net.allow` entries follow the one host grammar of `plugbox.net.hosts` (shared with fetch and the
  exemption list) and are stored canonical: names lower-cased, IP literals in standard form, IPv6 in
  brackets, ports without leading zeros. `allowConfigHosts` names string fields of the configSchema
  (dotted paths allowed).
- Ingress signatures: `secretField` (default `webhookSecret`) names a configSchema string field that
  must be marked secret. `template` is what the HMAC covers, with placeholders `{id}` (the value of
  `dedupHeader`), `{timestamp}` (of `timestampHeader`, Unix seconds) and `{body}` (the raw body),
  substituted literally; it must contain `{body}`, and `{id}`/`{timestamp}` whenever `dedupHeader`/
  `timestampHeader` is set (a `dedupHeader` also needs a `timestampHeader`: ids are remembered only
  for `toleranceSec`). Signature headers must be dedicated (`STANDARD_HEADERS` are refused).
  Defaults per scheme are in `_signature`.

This module reads files but runs no plugin code and imports no host service.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Collection
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import msgspec

from plugbox.config_schema import ConfigSchema
from plugbox.errors import ManifestError, TargetError
from plugbox.events import EVENTS
from plugbox.net.hosts import canonical_entry
from plugbox.permissions import PERMISSIONS

__all__ = [
    "DEFAULT_SECRET_FIELD",
    "MANIFEST_MAX_BYTES",
    "SIGNATURE_SCHEMES",
    "SUPPORTED_SDK_VERSIONS",
    "IngressRoute",
    "IngressSignature",
    "Manifest",
    "NetPolicy",
    "discover",
    "is_skipped_dir",
    "load_manifest",
    "parse_manifest",
]

MANIFEST_MAX_BYTES = 256 * 1024
MANIFEST_FILE = "manifest.json"
ID_MAX_CHARS = 64
ROUTE_MAX_CHARS = 128
HEADER_MAX_CHARS = 128
SUPPORTED_SDK_VERSIONS = ("1",)
SIGNATURE_SCHEMES = ("hmac-sha256", "shared-secret", "standard-webhooks", "none")
ENCODINGS = ("hex", "base64")
DEFAULT_SECRET_FIELD = "webhookSecret"
DEFAULT_TOLERANCE_SEC = 300

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*", re.ASCII | re.IGNORECASE)
ROUTE_PATTERN = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
VERSION_PATTERN = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})\.([0-9]{1,9})", re.ASCII)
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


class NetPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """`net.allow`: canonical `host`, `host:port`, `[v6]`, `[v6]:port` or `*`.
    `allow_config_hosts`: configSchema fields whose https URL hosts join the allowlist."""

    allow: tuple[str, ...] = ()
    allow_config_hosts: tuple[str, ...] = ()


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


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """A validated manifest. Build it with `parse_manifest` / `load_manifest`, not directly."""

    id: str
    name: str
    version: str
    type: str
    main: str
    description: str = ""
    sdk_version: str = "1"
    min_host_version: str | None = None
    permissions: frozenset[str] = frozenset()
    sessions: tuple[str, ...] = ("*",)
    session_scoped: bool = True
    net: NetPolicy = NetPolicy()
    config_schema: ConfigSchema | None = None
    ingress: tuple[IngressRoute, ...] = ()
    hooks: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """camelCase, like the file; `parse_manifest` accepts it back."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "type": self.type,
            "main": self.main,
            "description": self.description,
            "sdkVersion": self.sdk_version,
            "minHostVersion": self.min_host_version,
            "permissions": sorted(self.permissions),
            "sessions": list(self.sessions),
            "sessionScoped": self.session_scoped,
            "net": {"allow": list(self.net.allow), "allowConfigHosts": list(self.net.allow_config_hosts)},
            "configSchema": self.config_schema.to_json() if self.config_schema is not None else None,
            "ingress": [{"route": r.route, "signature": r.signature.to_json()} for r in self.ingress],
            "hooks": list(self.hooks),
        }


# --- entry points ---------------------------------------------------------------------------------


def parse_manifest(
    doc: Any,
    *,
    host_version: str,
    plugin_dir: Path | None = None,
    reserved_ids: Collection[str] = (),
    builtin: bool = False,
    allow_unsigned_ingress: bool = False,
) -> Manifest:
    """Check every SPEC §2 rule on a decoded manifest document.

    `reserved_ids` are the ids of *other* plugins (built-ins) this one may not take. `plugin_dir`
    None skips the filesystem checks on `main` (built-ins registered in code)."""
    if not isinstance(doc, dict):
        raise ManifestError(MANIFEST_FILE, "object", "the manifest must be a JSON object")
    plugin_id = _plugin_id(doc, reserved_ids)
    permissions = _permissions(doc)
    config_schema = _config_schema(doc)
    return Manifest(
        id=plugin_id,
        name=_required_str(doc, "name"),
        version=_required_str(doc, "version"),
        type=_plugin_type(doc, builtin),
        main=_main(doc, plugin_dir),
        description=_optional_str(doc, "description", ""),
        sdk_version=_sdk_version(doc),
        min_host_version=_min_host_version(doc, host_version),
        permissions=permissions,
        sessions=_sessions(doc),
        session_scoped=_bool(doc, "sessionScoped", True),
        net=_net(doc, config_schema),
        config_schema=config_schema,
        ingress=_ingress(doc, permissions, config_schema, allow_unsigned_ingress),
        hooks=_hooks(doc),
    )


def load_manifest(
    plugin_dir: Path,
    *,
    host_version: str,
    reserved_ids: Collection[str] = (),
    builtin: bool = False,
    allow_unsigned_ingress: bool = False,
) -> Manifest:
    """Read `plugin_dir/manifest.json` (size-capped, never through a symlink out of the directory,
    never blocking on a FIFO), decode it, and `parse_manifest` it."""
    raw = _read_manifest_file(plugin_dir)
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM, as some Windows editors write
        raw = raw[3:]
    try:
        doc = msgspec.json.decode(raw)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(MANIFEST_FILE, "json", f"is not valid JSON: {exc}") from None
    return parse_manifest(
        doc,
        host_version=host_version,
        plugin_dir=plugin_dir,
        reserved_ids=reserved_ids,
        builtin=builtin,
        allow_unsigned_ingress=allow_unsigned_ingress,
    )


def is_skipped_dir(name: str) -> bool:
    """Directories whose names start with `.` are never plugins (SPEC §2)."""
    return name.startswith(".")


def discover(plugins_dir: Path) -> list[Path]:
    """Candidate plugin directories under `plugins_dir`, sorted by name. A candidate without a
    manifest is still listed, so that loading it reports the problem instead of hiding it."""
    try:
        entries = list(plugins_dir.iterdir())
    except FileNotFoundError:
        return []
    return sorted((e for e in entries if not is_skipped_dir(e.name) and e.is_dir()), key=lambda e: e.name)


# --- reading --------------------------------------------------------------------------------------


def _read_manifest_file(plugin_dir: Path) -> bytes:
    path = plugin_dir / MANIFEST_FILE
    root = plugin_dir.resolve()
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, on Python < 3.13
        raise ManifestError(MANIFEST_FILE, "missing", f"no {MANIFEST_FILE} in {str(plugin_dir)!r}") from None
    if not resolved.is_relative_to(root):
        raise ManifestError(MANIFEST_FILE, "escape", "is a symlink that leaves the plugin directory")
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        fd = os.open(resolved, flags)
    except OSError as exc:
        raise ManifestError(MANIFEST_FILE, "missing", f"cannot be opened: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ManifestError(MANIFEST_FILE, "not-file", "is not a regular file")
        if info.st_size > MANIFEST_MAX_BYTES:
            raise ManifestError(MANIFEST_FILE, "size", f"is larger than {MANIFEST_MAX_BYTES} bytes")
        raw = file.read(MANIFEST_MAX_BYTES + 1)
    if len(raw) > MANIFEST_MAX_BYTES:
        raise ManifestError(MANIFEST_FILE, "size", f"is larger than {MANIFEST_MAX_BYTES} bytes")
    return raw


# --- field rules ----------------------------------------------------------------------------------


def _required_str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        raise ManifestError(key, "required", "is required")
    if not isinstance(value, str):
        raise ManifestError(key, "type", f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ManifestError(key, "empty", "must not be empty")
    return value


def _optional_str(doc: dict[str, Any], key: str, default: str, field: str | None = None) -> str:
    value = doc.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ManifestError(field or key, "type", f"must be a string, not {type(value).__name__}")
    return value


def _bool(doc: dict[str, Any], key: str, default: bool) -> bool:
    value = doc.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ManifestError(key, "type", "must be true or false")
    return value


def _str_list(doc: dict[str, Any], key: str, field: str) -> list[str] | None:
    """A list of non-empty strings, or None when absent."""
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ManifestError(field, "type", "must be a list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ManifestError(f"{field}[{index}]", "type", "must be a string")
        if not item:
            raise ManifestError(f"{field}[{index}]", "empty", "must not be empty")
    return value


def _plugin_id(doc: dict[str, Any], reserved_ids: Collection[str]) -> str:
    plugin_id = _required_str(doc, "id")
    if len(plugin_id) > ID_MAX_CHARS:
        raise ManifestError("id", "length", f"is longer than {ID_MAX_CHARS} characters")
    if not ID_PATTERN.fullmatch(plugin_id):
        raise ManifestError(
            "id", "pattern", f"{plugin_id!r} must match ^[a-z0-9][a-z0-9._-]*$ (ASCII, case-insensitive)"
        )
    if ".." in plugin_id:
        raise ManifestError("id", "dotdot", f"{plugin_id!r} must not contain '..'")
    if plugin_id.casefold() in {reserved.casefold() for reserved in reserved_ids}:
        raise ManifestError("id", "reserved", f"{plugin_id!r} is reserved by a built-in plugin")
    return plugin_id


def _plugin_type(doc: dict[str, Any], builtin: bool) -> str:
    kind = _required_str(doc, "type")
    if kind == "engine" and not builtin:
        raise ManifestError("type", "builtin-only", "'engine' is reserved for built-in plugins")
    if kind not in ("extension", "engine"):
        raise ManifestError("type", "unknown", f"{kind!r} is not a plugin type; use 'extension'")
    return kind


def _main(doc: dict[str, Any], plugin_dir: Path | None) -> str:
    main = _required_str(doc, "main")
    if "\x00" in main or "\\" in main:
        raise ManifestError("main", "path", "must be a '/'-separated path without NUL or backslash")
    if PurePosixPath(main).is_absolute() or PureWindowsPath(main).drive:
        raise ManifestError("main", "absolute", f"{main!r} must be relative to the plugin directory")
    normalised = posixpath.normpath(main)
    if normalised in (".", "..") or normalised.startswith("../"):
        raise ManifestError("main", "escape", f"{main!r} leaves the plugin directory")
    if plugin_dir is None:
        return normalised
    if not normalised.endswith(".py"):
        raise ManifestError("main", "suffix", f"{main!r} must be a .py file")
    root = plugin_dir.resolve()
    try:
        target = (root / normalised).resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, on Python < 3.13
        raise ManifestError("main", "missing", f"{main!r} does not exist in the plugin directory") from None
    if not target.is_relative_to(root):
        raise ManifestError("main", "escape", f"{main!r} resolves outside the plugin directory")
    if not target.is_file():
        raise ManifestError("main", "not-file", f"{main!r} is not a regular file")
    return normalised


def _sdk_version(doc: dict[str, Any]) -> str:
    version = _optional_str(doc, "sdkVersion", SUPPORTED_SDK_VERSIONS[-1])
    if version not in SUPPORTED_SDK_VERSIONS:
        raise ManifestError(
            "sdkVersion",
            "unsupported",
            f"{version!r} is not supported; this host speaks {SUPPORTED_SDK_VERSIONS}",
        )
    return version


def _version_tuple(text: str) -> tuple[int, int, int] | None:
    match = VERSION_PATTERN.fullmatch(text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _min_host_version(doc: dict[str, Any], host_version: str) -> str | None:
    wanted = doc.get("minHostVersion")
    if wanted is None:
        return None
    if not isinstance(wanted, str):
        raise ManifestError("minHostVersion", "type", "must be a string")
    wanted_tuple = _version_tuple(wanted)
    if wanted_tuple is None:
        raise ManifestError("minHostVersion", "version", f"{wanted!r} is not MAJOR.MINOR.PATCH")
    # The host's own version may carry a suffix (0.2.0.dev1, 0.2.0+local): compare its release part.
    host_match = VERSION_PATTERN.match(host_version)
    if host_match is None:
        raise ValueError(f"host_version {host_version!r} does not start with MAJOR.MINOR.PATCH")
    host_tuple = (int(host_match[1]), int(host_match[2]), int(host_match[3]))
    if wanted_tuple > host_tuple:
        raise ManifestError(
            "minHostVersion",
            "too-new",
            f"the plugin needs host {wanted} or newer; this host is {host_version}",
        )
    return wanted


def _permissions(doc: dict[str, Any]) -> frozenset[str]:
    names = _str_list(doc, "permissions", "permissions") or []
    for index, name in enumerate(names):
        if name not in PERMISSIONS:
            raise ManifestError(
                f"permissions[{index}]",
                "unknown",
                f"unknown permission {name!r}; known: {sorted(PERMISSIONS)}",
            )
    return frozenset(names)


def _sessions(doc: dict[str, Any]) -> tuple[str, ...]:
    sessions = _str_list(doc, "sessions", "sessions")
    return ("*",) if sessions is None else tuple(dict.fromkeys(sessions))


def _hooks(doc: dict[str, Any]) -> tuple[str, ...]:
    hooks = _str_list(doc, "hooks", "hooks") or []
    for index, event in enumerate(hooks):
        if event not in EVENTS:
            raise ManifestError(f"hooks[{index}]", "event", f"unknown event {event!r}")
    return tuple(dict.fromkeys(hooks))


def _config_schema(doc: dict[str, Any]) -> ConfigSchema | None:
    schema = doc.get("configSchema")
    return None if schema is None else ConfigSchema.parse(schema, "configSchema")


def _object(doc: dict[str, Any], key: str, field: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ManifestError(field, "type", "must be a JSON object")
    return value


# --- net ------------------------------------------------------------------------------------------


def _net(doc: dict[str, Any], schema: ConfigSchema | None) -> NetPolicy:
    net = _object(doc, "net", "net")
    allow = [
        _host_entry(e, f"net.allow[{i}]") for i, e in enumerate(_str_list(net, "allow", "net.allow") or [])
    ]
    config_hosts = _str_list(net, "allowConfigHosts", "net.allowConfigHosts") or []
    for index, name in enumerate(config_hosts):
        found = schema.field_type(name) if schema is not None else None
        if found != "string":
            raise ManifestError(
                f"net.allowConfigHosts[{index}]",
                "config-field",
                f"{name!r} must name a field of type 'string' in configSchema (found {found!r})",
            )
    return NetPolicy(allow=tuple(dict.fromkeys(allow)), allow_config_hosts=tuple(dict.fromkeys(config_hosts)))


def _host_entry(entry: str, field: str) -> str:
    """Check one `net.allow` entry (the grammar of `plugbox.net.hosts`) and return it canonical."""
    if entry == "*":
        return entry
    try:
        return canonical_entry(entry)
    except TargetError as exc:
        raise ManifestError(field, "host", str(exc)) from None


# --- ingress --------------------------------------------------------------------------------------


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
