"""A plugin's `configSchema`: checking the schema itself, validating config against it, and the
secret handling built on it (masking for the API, keeping secrets on an unchanged write, the values
to redact from logs).

Schema format (SPEC §2): the root is an object node, `{"type": "object", "properties": {...}}`
(`type` may be omitted at the root). Every node has a `type` among string, number, boolean, array,
object, textarea, and may carry title, description, default, enum, required, secret, min, max,
pattern, items, properties. Unknown option keys are refused, so that a typo such as `"secert"`
cannot silently leave a secret unmasked.

Validation semantics:
- a JSON null counts as absent (so a PUT can clear a value); absent fields take their default;
- `required: true` means present, non-null and, for strings, non-empty; an object node may also list
  its required children JSON-Schema style (`"required": ["a", "b"]`);
- keys not in `properties` are refused; an object node without `properties` holds free-form plain data;
- min/max bound a number's value and a string's or array's length; `pattern` must match the whole string;
- an absent optional object whose properties carry defaults appears with those defaults.

Bounds, because schemas come from untrusted manifests and are checked in the host: at most
SCHEMA_MAX_DEPTH nested nodes and SCHEMA_MAX_PROPERTIES properties; patterns at most
PATTERN_MAX_CHARS long and compiled with RE2 (google-re2), whose matching time is linear in the
input whatever the pattern, so no pattern can stall the host the way `(a+)+$` or `a*a*a*b` stalls
Python's backtracking `re`; RE2 has no backreferences or lookaround, and refuses them; a
config document at most CONFIG_MAX_BYTES encoded. `secret` applies to string fields outside arrays,
so that every secret has a dotted path, and takes no `default` or `enum` (the operator sets secrets;
a value in the manifest is public, and a default would count as a configured webhook secret).

Error paths are dotted (`auth.token`) with array indices (`servers[2].host`); `(root)` is the whole
document. ConfigError has no rule attribute, so its message ends with the rule, like `[enum]`.

This module is pure data validation: it does no I/O and imports nothing from the host services.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
import re2

from plugbox.errors import ConfigError, ManifestError

__all__ = [
    "CONFIG_MAX_BYTES",
    "MASK",
    "PATTERN_MAX_CHARS",
    "SCHEMA_MAX_DEPTH",
    "SCHEMA_MAX_PROPERTIES",
    "ConfigSchema",
]

MASK = "********"
CONFIG_MAX_BYTES = 256 * 1024
SCHEMA_MAX_DEPTH = 8
SCHEMA_MAX_PROPERTIES = 256
PATTERN_MAX_CHARS = 512
PROPERTY_NAME_MAX_CHARS = 128
# Free-form (object without properties, array without items) values may nest this deep.
FREEFORM_MAX_DEPTH = 32

ROOT = "(root)"
TYPES = frozenset({"string", "number", "boolean", "array", "object", "textarea"})
STRING_TYPES = frozenset({"string", "textarea"})
OPTIONS = frozenset(
    {
        "type",
        "title",
        "description",
        "default",
        "enum",
        "required",
        "secret",
        "min",
        "max",
        "pattern",
        "items",
        "properties",
    }
)
# Which types each type-specific option applies to.
APPLIES_TO: dict[str, frozenset[str]] = {
    "enum": frozenset({"string", "textarea", "number", "boolean"}),
    "min": frozenset({"string", "textarea", "number", "array"}),
    "max": frozenset({"string", "textarea", "number", "array"}),
    "pattern": STRING_TYPES,
    "secret": STRING_TYPES,
    "items": frozenset({"array"}),
    "properties": frozenset({"object"}),
}
PROPERTY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*", re.ASCII)


@dataclass(frozen=True, slots=True)
class _Node:
    type: str
    required: bool = False
    secret: bool = False
    has_default: bool = False
    default: Any = None
    enum: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    pattern: re2._Regexp[str] | None = None
    items: _Node | None = None
    properties: dict[str, _Node] | None = None
    required_names: frozenset[str] = field(default_factory=frozenset)


def _config_error(path: str, rule: str, message: str) -> ConfigError:
    return ConfigError(path or ROOT, f"{message} [{rule}]")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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


# --- checking the schema --------------------------------------------------------------------------


class _SchemaParser:
    def __init__(self) -> None:
        self.property_count = 0

    def parse_root(self, doc: dict[str, Any], path: str) -> _Node:
        if doc.get("type", "object") != "object":
            raise ManifestError(f"{path}.type", "type", "the root of a configSchema must be of type 'object'")
        return self.node({"type": "object", **doc}, path, depth=1, under_items=False)

    def node(self, doc: Any, path: str, *, depth: int, under_items: bool, is_items: bool = False) -> _Node:
        if depth > SCHEMA_MAX_DEPTH:
            raise ManifestError(path, "depth", f"schema nests deeper than {SCHEMA_MAX_DEPTH} levels")
        if not isinstance(doc, dict):
            raise ManifestError(path, "type", "a schema node must be a JSON object")
        for key in doc:
            if key not in OPTIONS:
                raise ManifestError(f"{path}.{key}", "unknown-key", f"unknown schema option {key!r}")
        kind = doc.get("type")
        if kind is None:
            raise ManifestError(f"{path}.type", "required", "every schema node needs a type")
        if not isinstance(kind, str) or kind not in TYPES:
            raise ManifestError(f"{path}.type", "type", f"unknown type {kind!r}; one of {sorted(TYPES)}")
        for option, types in APPLIES_TO.items():
            if option in doc and kind not in types:
                raise ManifestError(
                    f"{path}.{option}", "not-applicable", f"{option!r} does not apply to type {kind!r}"
                )
        # An items node describes every element: it has no "absent" state to require or default.
        # Secrets are plain dotted paths, so none may live anywhere below an array.
        refused = ("required", "default", "secret") if is_items else ("secret",) if under_items else ()
        for option in refused:
            if option in doc:
                raise ManifestError(
                    f"{path}.{option}", "not-applicable", f"{option!r} does not apply inside array items"
                )
        for option in ("title", "description"):
            if option in doc and not isinstance(doc[option], str):
                raise ManifestError(f"{path}.{option}", "type", "must be a string")
        required, required_names = self.required(doc, path, kind)
        secret = self.flag(doc, "secret", path)
        for option in ("default", "enum") if secret else ():
            # A secret comes from the operator: a value written in the manifest is public (anyone
            # who can read the package or the API's configSchema knows it) and would count as set.
            if doc.get(option) is not None:
                raise ManifestError(f"{path}.{option}", "secret", f"a secret field cannot have {option!r}: "
                                    "the operator sets secrets")
        low, high = self.bounds(doc, path, kind)
        node = _Node(
            type=kind,
            required=required,
            secret=secret,
            enum=self.enum(doc, path, kind),
            min=low,
            max=high,
            pattern=_compile_pattern(doc["pattern"], f"{path}.pattern") if "pattern" in doc else None,
            items=(
                self.node(doc["items"], f"{path}.items", depth=depth + 1, under_items=True, is_items=True)
                if "items" in doc
                else None
            ),
            properties=self.properties(doc, path, depth, under_items),
            required_names=required_names,
        )
        for name in required_names:
            if node.properties is None or name not in node.properties:
                raise ManifestError(
                    f"{path}.required", "required", f"lists {name!r}, which is not a property"
                )
        if node.required_names:
            node = _replace_children(node)
        if "default" in doc and doc["default"] is not None:
            node = self.with_default(node, doc["default"], path)
        return node

    def properties(
        self, doc: dict[str, Any], path: str, depth: int, under_items: bool
    ) -> dict[str, _Node] | None:
        if "properties" not in doc:
            return None
        props = doc["properties"]
        if not isinstance(props, dict):
            raise ManifestError(f"{path}.properties", "type", "must be a JSON object")
        parsed: dict[str, _Node] = {}
        for name, child in props.items():
            child_path = f"{path}.properties.{name}"
            if (
                not isinstance(name, str)
                or len(name) > PROPERTY_NAME_MAX_CHARS
                or not PROPERTY_NAME.fullmatch(name)
            ):
                raise ManifestError(
                    child_path,
                    "name",
                    "property names are letters, digits, '_' and '-' (not starting with '-'), "
                    f"at most {PROPERTY_NAME_MAX_CHARS} characters",
                )
            self.property_count += 1
            if self.property_count > SCHEMA_MAX_PROPERTIES:
                raise ManifestError(
                    child_path, "size", f"more than {SCHEMA_MAX_PROPERTIES} properties in the schema"
                )
            parsed[name] = self.node(child, child_path, depth=depth + 1, under_items=under_items)
        return parsed

    @staticmethod
    def flag(doc: dict[str, Any], option: str, path: str) -> bool:
        value = doc.get(option, False)
        if not isinstance(value, bool):
            raise ManifestError(f"{path}.{option}", "type", "must be true or false")
        return value

    def required(self, doc: dict[str, Any], path: str, kind: str) -> tuple[bool, frozenset[str]]:
        value = doc.get("required", False)
        if isinstance(value, list) and kind == "object":
            if not all(isinstance(name, str) for name in value):
                raise ManifestError(f"{path}.required", "type", "a list of required properties holds strings")
            return False, frozenset(value)
        return self.flag(doc, "required", path), frozenset()

    @staticmethod
    def enum(doc: dict[str, Any], path: str, kind: str) -> tuple[Any, ...] | None:
        if "enum" not in doc:
            return None
        values = doc["enum"]
        if not isinstance(values, list) or not values:
            raise ManifestError(f"{path}.enum", "enum", "must be a non-empty list")
        for index, value in enumerate(values):
            if not _scalar_fits(kind, value):
                raise ManifestError(f"{path}.enum[{index}]", "enum", f"{value!r} is not a {kind}")
        return tuple(values)

    @staticmethod
    def bounds(doc: dict[str, Any], path: str, kind: str) -> tuple[float | None, float | None]:
        bounds: dict[str, float | None] = {}
        for option in ("min", "max"):
            value = doc.get(option)
            if value is not None:
                if kind == "number":
                    if not _is_number(value) or not math.isfinite(value):
                        raise ManifestError(f"{path}.{option}", "type", "must be a finite number")
                elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ManifestError(
                        f"{path}.{option}",
                        "type",
                        f"a length bound for {kind!r} must be a non-negative integer",
                    )
            bounds[option] = value
        low, high = bounds["min"], bounds["max"]
        if low is not None and high is not None and low > high:
            raise ManifestError(f"{path}.max", "range", f"max {high} is below min {low}")
        return low, high

    @staticmethod
    def with_default(node: _Node, default: Any, path: str) -> _Node:
        try:
            normalised = _check(node, default, "default")
        except ConfigError as exc:
            raise ManifestError(
                f"{path}.default", "default", f"the default does not fit the schema: {exc}"
            ) from None
        return replace(node, has_default=True, default=normalised)


def _replace_children(node: _Node) -> _Node:
    """Fold a JSON-Schema style `required: [...]` list into the children's own flags."""
    assert node.properties is not None
    children = {
        name: replace(child, required=True) if name in node.required_names else child
        for name, child in node.properties.items()
    }
    return replace(node, properties=children)


def _scalar_fits(kind: str, value: Any) -> bool:
    if kind in STRING_TYPES:
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    return _is_number(value) and math.isfinite(value)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported as a ManifestError, not on stderr


def _compile_pattern(pattern: Any, path: str) -> re2._Regexp[str]:
    """Compile a schema pattern with RE2 (patterns come from untrusted manifests and run in the
    host: RE2 matches in linear time, so none can make config validation hang)."""
    if not isinstance(pattern, str):
        raise ManifestError(path, "type", "must be a string")
    if len(pattern) > PATTERN_MAX_CHARS:
        raise ManifestError(path, "pattern", f"longer than {PATTERN_MAX_CHARS} characters")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ManifestError(path, "pattern", f"does not compile (RE2 syntax: no backreferences or "
                                             f"lookaround): {reason}") from None


# --- validating config ----------------------------------------------------------------------------


def _check(node: _Node, value: Any, path: str) -> Any:
    """Validate a non-null `value` against `node`; return it normalised (defaults applied, copied)."""
    kind = node.type
    if kind in STRING_TYPES:
        if not isinstance(value, str):
            raise _config_error(path, "type", f"must be a string (type {kind!r})")
        _check_bounds(node, len(value), path, "length")
        if node.pattern is not None and node.pattern.fullmatch(value) is None:
            raise _config_error(path, "pattern", f"does not match the pattern {node.pattern.pattern!r}")
    elif kind == "number":
        if not _is_number(value) or not math.isfinite(value):
            raise _config_error(path, "type", "must be a finite number")
        _check_bounds(node, value, path, "value")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise _config_error(path, "type", "must be true or false")
    elif kind == "array":
        if not isinstance(value, list):
            raise _config_error(path, "type", "must be an array")
        _check_bounds(node, len(value), path, "item count")
        if node.items is None:
            return _check_freeform(value, path, 0)
        items = node.items
        return [_check(items, item, f"{path}[{i}]") for i, item in enumerate(value)]
    else:
        if not isinstance(value, dict):
            raise _config_error(path, "type", "must be an object")
        if node.properties is None:
            return _check_freeform(value, path, 0)
        return _check_properties(node, value, path)
    if node.enum is not None and value not in node.enum:
        raise _config_error(path, "enum", f"{value!r} is not one of {list(node.enum)!r}")
    return value


def _check_bounds(node: _Node, measure: float, path: str, what: str) -> None:
    if node.min is not None and measure < node.min:
        raise _config_error(path, "min", f"{what} {measure} is below the minimum {node.min}")
    if node.max is not None and measure > node.max:
        raise _config_error(path, "max", f"{what} {measure} is above the maximum {node.max}")


def _check_properties(node: _Node, value: dict[str, Any], path: str) -> dict[str, Any]:
    properties = node.properties or {}
    for key in value:
        if not isinstance(key, str):
            raise _config_error(path, "type", f"object keys must be strings, not {key!r}")
        if key not in properties:
            raise _config_error(_join(path, key), "unknown", "is not a field of the config schema")
    out: dict[str, Any] = {}
    for name, child in properties.items():
        child_path = _join(path, name)
        item = value.get(name)
        if item is None and child.has_default:
            item = copy.deepcopy(child.default)
        missing = item is None or (item == "" and child.type in STRING_TYPES)
        if child.required and missing:
            raise _config_error(child_path, "required", "is required")
        if item is None:
            filled = _fill_optional_object(child, child_path)
            if filled:
                out[name] = filled
            continue
        out[name] = _check(child, item, child_path)
    return out


def _fill_optional_object(node: _Node, path: str) -> dict[str, Any] | None:
    """An absent optional object with properties appears with its children's defaults, if that
    is valid on its own (no required child without a default)."""
    if node.type != "object" or node.properties is None:
        return None
    try:
        return _check_properties(node, {}, path)
    except ConfigError:
        return None


def _check_freeform(value: Any, path: str, depth: int) -> Any:
    """Plain JSON data of bounded depth; returns a copy."""
    if depth > FREEFORM_MAX_DEPTH:
        raise _config_error(path, "depth", f"nests deeper than {FREEFORM_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _config_error(path, "type", "numbers must be finite")
        return value
    if isinstance(value, list):
        return [_check_freeform(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _config_error(path, "type", f"object keys must be strings, not {key!r}")
            out[key] = _check_freeform(item, _join(path, key), depth + 1)
        return out
    raise _config_error(path, "type", f"{type(value).__name__} is not plain JSON data")
