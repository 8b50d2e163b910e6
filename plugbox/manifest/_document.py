"""The manifest document (SPEC §2): the typed Manifest and NetPolicy, `parse_manifest` /
`load_manifest` / `discover`, reading `manifest.json` safely, and the rules on every top-level field
except `ingress` (which `plugbox.manifest._ingress` checks).

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
from plugbox.events import EVENTS, unsupported_openwa_event
from plugbox.manifest._fields import _bool, _object, _optional_str, _required_str, _str_list
from plugbox.manifest._ingress import IngressRoute, _ingress
from plugbox.manifest._openwa import OpenWACompat, openwa_compat
from plugbox.net.hosts import canonical_entry
from plugbox.permissions import PERMISSIONS

MANIFEST_MAX_BYTES = 256 * 1024
MANIFEST_FILE = "manifest.json"
ID_MAX_CHARS = 64
SUPPORTED_SDK_VERSIONS = ("1",)

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*", re.ASCII | re.IGNORECASE)
VERSION_PATTERN = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})\.([0-9]{1,9})", re.ASCII)


class NetPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """`net.allow`: canonical `host`, `host:port`, `[v6]`, `[v6]:port` or `*`.
    `allow_config_hosts`: configSchema fields whose https URL hosts join the allowlist."""

    allow: tuple[str, ...] = ()
    allow_config_hosts: tuple[str, ...] = ()


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
    openwa: OpenWACompat = OpenWACompat()  # OpenWA-only fields, kept and reported (`_openwa`)

    @property
    def notes(self) -> tuple[str, ...]:
        """What loading this manifest left out or reads differently, one sentence each."""
        return self.openwa.notes

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
            "ingress": [r.to_json() for r in self.ingress],
            "hooks": list(self.hooks),
            "minOpenWAVersion": self.openwa.min_openwa_version,
            "testedOpenWAVersion": self.openwa.tested_openwa_version,
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
    hooks, dropped = _hooks(doc)
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
        hooks=hooks,
        openwa=openwa_compat(doc, dropped),
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
        raise ManifestError("main", "suffix", f"{main!r} must be a .py file (a JavaScript main, as OpenWA plugins "
                                              "have, is ported to Python: see docs/porting-from-openwa.md)")
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


def _hooks(doc: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[int, str]]]:
    """The declared events, and the OpenWA-only ones left out as (index, event)."""
    hooks = _str_list(doc, "hooks", "hooks") or []
    kept: list[str] = []
    dropped: list[tuple[int, str]] = []
    for index, event in enumerate(hooks):
        if unsupported_openwa_event(event):
            dropped.append((index, event))
        elif event not in EVENTS:
            raise ManifestError(f"hooks[{index}]", "event", f"unknown event {event!r}")
        else:
            kept.append(event)
    return tuple(dict.fromkeys(kept)), dropped


def _config_schema(doc: dict[str, Any]) -> ConfigSchema | None:
    schema = doc.get("configSchema")
    return None if schema is None else ConfigSchema.parse(schema, "configSchema")


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
