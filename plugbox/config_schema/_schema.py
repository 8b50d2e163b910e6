"""ConfigSchema, the public face of a parsed configSchema: validation entry point, field lookup,
and the secret handling built on the schema (masking for the API, keeping secrets on an unchanged
write, the values to redact from logs). Parsing is `_parser`'s, checking values `_check`'s."""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from plugbox.config_schema._check import _check_properties
from plugbox.config_schema._node import CONFIG_MAX_BYTES, MASK, ROOT, _config_error, _join, _Node
from plugbox.config_schema._parser import _SchemaParser
from plugbox.errors import ManifestError


class ConfigSchema:
    """A parsed, checked configSchema. Immutable; equal when the documents are equal."""

    __slots__ = ("_doc", "_key", "_root", "_secret_paths")

    def __init__(self, doc: dict[str, Any], root: _Node) -> None:
        self._doc = copy.deepcopy(doc)
        self._root = root
        self._secret_paths = tuple(_collect_secrets(root, ""))
        self._key = msgspec.json.encode(doc, order="sorted")

    @classmethod
    def parse(cls, doc: Any, field: str = "configSchema") -> ConfigSchema:
        """Check the schema document itself; a failure is a ManifestError naming the schema path
        (e.g. `configSchema.properties.timeoutMs.min`) and the rule."""
        if not isinstance(doc, dict):
            raise ManifestError(field, "type", "must be a JSON object")
        root = _SchemaParser().parse_root(doc, field)
        return cls(doc, root)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigSchema) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"ConfigSchema({self._doc!r})"

    def validate(self, config: Any) -> dict[str, Any]:
        """Return a new config with defaults applied, or raise ConfigError naming the field."""
        try:
            size = len(msgspec.json.encode(config))
        except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
            raise _config_error(ROOT, "type", f"is not plain JSON data ({exc})") from None
        if size > CONFIG_MAX_BYTES:
            raise _config_error(ROOT, "size", f"is {size} bytes encoded, more than {CONFIG_MAX_BYTES}")
        if not isinstance(config, dict):
            raise _config_error(ROOT, "type", "must be a JSON object")
        return _check_properties(self._root, config, "")

    def field_type(self, path: str) -> str | None:
        """The type of the field at dotted `path` (through object properties), or None."""
        node: _Node | None = self._root
        for part in path.split("."):
            if node is None or node.properties is None:
                return None
            node = node.properties.get(part)
        return node.type if node is not None else None

    def secret_paths(self) -> list[str]:
        """Dotted paths of the fields marked secret, in schema order."""
        return list(self._secret_paths)

    def mask(self, config: dict[str, Any]) -> dict[str, Any]:
        """A copy of `config` with every set, non-empty secret value replaced by MASK."""
        masked = copy.deepcopy(config)
        for path in self._secret_paths:
            parent, key = _parent(masked, path)
            if parent is not None and parent.get(key) not in (None, ""):
                parent[key] = MASK
        return masked

    def merge_update(self, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Apply an API write: a secret that `new` leaves absent, or sends back as MASK, keeps its value
        from `old` (only where its parent object is present in `new`; null clears it). Then validate."""
        if not isinstance(new, dict):
            return self.validate(new)
        merged = copy.deepcopy(new)
        for path in self._secret_paths:
            parent, key = _parent(merged, path)
            if parent is None or parent.get(key, MASK) != MASK:
                continue
            old_parent, _ = _parent(old, path)
            kept = old_parent.get(key) if old_parent is not None else None
            if kept is not None:
                parent[key] = copy.deepcopy(kept)
            else:
                # Nothing to keep: a MASK sent back for an unset secret is not a value.
                parent.pop(key, None)
        return self.validate(merged)

    def secret_values(self, config: dict[str, Any]) -> list[str]:
        """The non-empty secret strings present in `config`, for log redaction."""
        values: list[str] = []
        for path in self._secret_paths:
            parent, key = _parent(config, path)
            value = parent.get(key) if parent is not None else None
            if isinstance(value, str) and value and value not in values:
                values.append(value)
        return values

    def to_json(self) -> dict[str, Any]:
        """The schema document as the manifest gave it (a copy)."""
        return copy.deepcopy(self._doc)


def _parent(config: Any, path: str) -> tuple[dict[str, Any] | None, str]:
    """The dict holding the last segment of dotted `path` in `config`, and that segment."""
    *parents, key = path.split(".")
    node = config
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), key


def _collect_secrets(node: _Node, path: str) -> list[str]:
    paths: list[str] = []
    for name, child in (node.properties or {}).items():
        child_path = _join(path, name)
        if child.secret:
            paths.append(child_path)
        paths.extend(_collect_secrets(child, child_path))
    return paths
