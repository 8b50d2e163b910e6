"""Every exception plugbox raises, in one place.

    PlugboxError                      base of everything below
    ├── ManifestError                 a manifest rule failed (names field and rule)
    ├── ZipRefused                    an uploaded plugin archive broke a rule (names member and rule)
    ├── DownloadError                 a plugin archive could not be fetched from its URL (status: why)
    ├── ConfigError                   a config value failed its schema (names the field)
    ├── PluginStateError              a lifecycle call that the plugin's state forbids
    │   └── PluginNotFound
    ├── StorageError                  bad key/value, quota exceeded
    │   ├── DatabaseError             the database itself failed (driver error, connection lost)
    │   └── InstanceConflict          an ingress instance id is taken, or its plugin holds its bound
    ├── EngineError                   the engine refused (unknown session, chat, ...)
    ├── SendVetoed                    a `message:sending` handler stopped the send
    ├── PluginError                   the plugin's own code raised (message says where)
    ├── CapabilityError               a capability call was denied or invalid (sdk re-exports it)
    │   ├── PermissionDenied          the manifest lacks the permission the call needs
    │   ├── CapabilityTimeout         a capability call ran out of time
    │   ├── FetchRefused              net.fetch refused a URL, host or address before connecting
    │   └── PlainDataError            a value that is not plain data was about to cross (also TypeError)
    ├── BridgeError                   the worker channel is broken or sent garbage
    │   ├── WorkerGone                the worker exited; every in-flight call gets this
    │   └── FrameTooLarge             a frame declared a length above the cap (ends the worker)
    ├── ConfinementError              a required confinement layer could not be applied
    ├── TargetError                   a host name, host-list entry or fetch URL is refused (also ValueError)
    │   └── LiteralIPError            spelled like an IP address, but not a valid one
    ├── ApiError                      an HTTP API request is refused (carries the status)
    ├── IngressRefused                an ingress request is refused (status and a metrics label)
    └── BenchError                    the benchmark could not measure
        └── AnchorError               a benchmark anchor process failed or printed no report

Messages always name what was wrong: the field, verb, permission, session or path at fault. Two
classes also derive from a builtin (`PlainDataError` from TypeError, `TargetError` from ValueError)
because callers outside plugbox reasonably catch those for "wrong type" and "bad value".
"""

from __future__ import annotations

import ipaddress

__all__ = [
    "AnchorError",
    "ApiError",
    "BenchError",
    "BridgeError",
    "CapabilityError",
    "CapabilityTimeout",
    "ConfigError",
    "ConfinementError",
    "DatabaseError",
    "DownloadError",
    "EngineError",
    "FetchRefused",
    "FrameTooLarge",
    "IngressRefused",
    "InstanceConflict",
    "LiteralIPError",
    "ManifestError",
    "PermissionDenied",
    "PlainDataError",
    "PlugboxError",
    "PluginError",
    "PluginNotFound",
    "PluginStateError",
    "SendVetoed",
    "StorageError",
    "TargetError",
    "WorkerGone",
    "ZipRefused",
]


class PlugboxError(Exception):
    """Base class of every plugbox error."""


class ManifestError(PlugboxError):
    """A manifest failed validation. `field` is a dotted path, `rule` a short rule name."""

    def __init__(self, field: str, rule: str, message: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"manifest field {field!r}: {message} [{rule}]")


class ZipRefused(PlugboxError):
    """The upload is not an acceptable plugin archive; the message names the member and rule."""


class DownloadError(PlugboxError):
    """Installing from a URL failed before the archive was checked: the URL or its address was
    refused (status 400), the server failed or answered badly (502), it was too slow (504), or
    the bytes do not match the pinned sha256 (400). The message names the host and the rule."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(PlugboxError):
    """A config document does not satisfy the plugin's configSchema. `errors` holds every field's
    error when more than one field is wrong (the message lists them all; `field` is the first)."""

    def __init__(self, field: str, message: str, errors: tuple[ConfigError, ...] = ()) -> None:
        self.field = field
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors) if errors else f"config field {field!r}: {message}")

    @classmethod
    def combine(cls, errors: list[ConfigError]) -> ConfigError:
        """One error for all of `errors` (flattened); the error itself when there is only one."""
        flat = tuple(leaf for e in errors for leaf in (e.errors or (e,)))
        return flat[0] if len(flat) == 1 else cls(flat[0].field, "", errors=flat)


class PluginStateError(PlugboxError):
    """The operation is not allowed in the plugin's current state."""


class PluginNotFound(PluginStateError):
    def __init__(self, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        super().__init__(f"no plugin with id {plugin_id!r}")


class StorageError(PlugboxError):
    """A storage key or value was refused, or the quota would be exceeded."""


class InstanceConflict(StorageError):
    """An ingress instance cannot be created: its id is taken within the plugin, or the plugin holds
    `ingress_instances_per_plugin` already (a storage bound, checked in the same transaction)."""


class DatabaseError(StorageError):
    """The database backend failed: the driver's error (SQLite or PostgreSQL), translated at the
    `Database` boundary so stores never see a driver's exception type."""


class EngineError(PlugboxError):
    """The engine refused a request."""


class SendVetoed(PlugboxError):
    """A `message:sending` hook handler stopped the send."""


class PluginError(PlugboxError):
    """The plugin's own code raised or returned something invalid."""


class CapabilityError(PlugboxError):
    """A capability call was refused: missing permission, session out of scope, bad argument,
    unknown verb, too many calls in flight, or the host service failed."""


class PermissionDenied(CapabilityError):
    """The plugin's manifest does not grant the permission a capability call needs."""


class CapabilityTimeout(CapabilityError):
    """A capability call did not complete within its budget."""


class PlainDataError(CapabilityError, TypeError):
    """A value that is not plain data was about to cross the plugin boundary; `path` names it
    (e.g. `data.items[3]`)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}")


class BridgeError(PlugboxError):
    """The channel to a worker failed or carried invalid frames."""


class WorkerGone(BridgeError):
    """The worker process exited; raised for every call that was in flight."""


class FetchRefused(CapabilityError):
    """A fetch refused by its URL, the allowlist or the public-address rule, before any connection
    (the caller's request was at fault, not the server it named)."""


class FrameTooLarge(BridgeError):
    """A frame declared a length above the cap: the stream cannot be resynchronised."""

    def __init__(self, size: int, cap: int) -> None:
        self.size = size
        self.cap = cap
        super().__init__(f"frame of {size} bytes exceeds the {cap}-byte cap")


class ConfinementError(PlugboxError):
    """A confinement layer that the policy requires could not be applied."""

    def __init__(self, layer: str, reason: str) -> None:
        self.layer = layer
        self.reason = reason
        super().__init__(f"confinement layer {layer!r} could not be applied: {reason}")


class TargetError(PlugboxError, ValueError):
    """A host name, host-list entry or fetch URL is not acceptable; the message says why. `ip` is
    set when the host was an IP literal that the URL parser refused (e.g. `0177.0.0.1`), so the
    caller can name the address."""

    def __init__(self, message: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None) -> None:
        super().__init__(message)
        self.ip = ip


class LiteralIPError(TargetError):
    """The host is spelled like an IP address but is not a valid one (e.g. `0400.0.0.1`, `08.1`)."""


class ApiError(PlugboxError):
    """An HTTP API request is refused with `status`; `field` names the request field at fault."""

    def __init__(
        self, status: int, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers


class IngressRefused(PlugboxError):
    """An ingress request is refused. `status` is the HTTP status, `reason` a short label for metrics."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class BenchError(PlugboxError):
    """The benchmark could not measure (a plugin failed to enable, a hook failed, an anchor failed)."""


class AnchorError(BenchError):
    """A benchmark anchor process failed or printed something that is not its report."""
