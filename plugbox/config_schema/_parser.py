"""Checking a configSchema itself (SPEC §2) and building its `_Node` tree: known options only, each
on the types it applies to, depth and property-count bounds, RE2 patterns, defaults that fit.
Every failure is a ManifestError naming the schema path. Validating config is `_check`'s job."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import re2

from plugbox.config_schema._check import _check
from plugbox.config_schema._node import (
    APPLIES_TO,
    OPTIONS,
    PATTERN_MAX_CHARS,
    PROPERTY_NAME,
    PROPERTY_NAME_MAX_CHARS,
    SCHEMA_MAX_DEPTH,
    SCHEMA_MAX_PROPERTIES,
    STRING_TYPES,
    TYPES,
    _is_number,
    _Node,
)
from plugbox.errors import ConfigError, ManifestError


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
