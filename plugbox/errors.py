"""Every exception plugbox raises, in one place.

    PlugboxError                      base of everything below
    ├── ManifestError                 a manifest rule failed (names field and rule)
    ├── ZipRefused                    an uploaded plugin archive broke a rule (names member and rule)
    ├── ConfigError                   a config value failed its schema (names the field)
    ├── PluginStateError              a lifecycle call that the plugin's state forbids
    │   └── PluginNotFound
    ├── StorageError                  bad key/value, quota exceeded
    ├── EngineError                   the engine refused (unknown session, chat, ...)
    ├── SendVetoed                    a `message:sending` handler stopped the send
    ├── PluginError                   the plugin's own code raised (message says where)
    ├── CapabilityError               a capability call was denied or invalid (sdk re-exports it)
    │   └── CapabilityTimeout         a capability call ran out of time
    ├── BridgeError                   the worker channel is broken or sent garbage
    │   └── WorkerGone                the worker exited; every in-flight call gets this
    └── ConfinementError              a required confinement layer could not be applied

Messages always name what was wrong: the field, verb, permission, session or path at fault.
"""

from __future__ import annotations

__all__ = [
    "BridgeError",
    "CapabilityError",
    "CapabilityTimeout",
    "ConfigError",
    "ConfinementError",
    "EngineError",
    "ManifestError",
    "PlugboxError",
    "PluginError",
    "PluginNotFound",
    "PluginStateError",
    "SendVetoed",
    "StorageError",
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


class ConfigError(PlugboxError):
    """A config document does not satisfy the plugin's configSchema."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"config field {field!r}: {message}")


class PluginStateError(PlugboxError):
    """The operation is not allowed in the plugin's current state."""


class PluginNotFound(PluginStateError):
    def __init__(self, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        super().__init__(f"no plugin with id {plugin_id!r}")


class StorageError(PlugboxError):
    """A storage key or value was refused, or the quota would be exceeded."""


class EngineError(PlugboxError):
    """The engine refused a request."""


class SendVetoed(PlugboxError):
    """A `message:sending` hook handler stopped the send."""


class PluginError(PlugboxError):
    """The plugin's own code raised or returned something invalid."""


class CapabilityError(PlugboxError):
    """A capability call was refused: missing permission, session out of scope, bad argument,
    unknown verb, too many calls in flight, or the host service failed."""


class CapabilityTimeout(CapabilityError):
    """A capability call did not complete within its budget."""


class BridgeError(PlugboxError):
    """The channel to a worker failed or carried invalid frames."""


class WorkerGone(BridgeError):
    """The worker process exited; raised for every call that was in flight."""


class ConfinementError(PlugboxError):
    """A confinement layer that the policy requires could not be applied."""

    def __init__(self, layer: str, reason: str) -> None:
        self.layer = layer
        self.reason = reason
        super().__init__(f"confinement layer {layer!r} could not be applied: {reason}")
