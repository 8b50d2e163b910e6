"""Validating a config document against a parsed schema (`_Node`): types, bounds, patterns, enums,
required fields, defaults, and free-form plain data. Every failure is a ConfigError with a dotted
path. Knows nothing of how a schema is parsed (`_parser`) or of secrets (`_schema`)."""

from __future__ import annotations

import copy
import math
from typing import Any

from plugbox.config_schema._node import (
    FREEFORM_MAX_DEPTH,
    STRING_TYPES,
    _config_error,
    _is_number,
    _join,
    _Node,
)
from plugbox.errors import ConfigError


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
    """Check every field, then raise one ConfigError naming every wrong one (an operator fixing a
    config should not discover its errors one PUT at a time)."""
    properties = node.properties or {}
    errors: list[ConfigError] = []
    for key in value:
        if not isinstance(key, str):
            errors.append(_config_error(path, "type", f"object keys must be strings, not {key!r}"))
        elif key not in properties:
            errors.append(_config_error(_join(path, key), "unknown", "is not a field of the config schema"))
    out: dict[str, Any] = {}
    for name, child in properties.items():
        child_path = _join(path, name)
        item = value.get(name)
        if item is None and child.has_default:
            item = copy.deepcopy(child.default)
        missing = item is None or (item == "" and child.type in STRING_TYPES)
        if child.required and missing:
            errors.append(_config_error(child_path, "required", "is required"))
            continue
        if item is None:
            filled = _fill_optional_object(child, child_path)
            if filled:
                out[name] = filled
            continue
        try:
            out[name] = _check(child, item, child_path)
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise ConfigError.combine(errors)
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
