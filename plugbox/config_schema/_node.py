"""The parsed form of a configSchema (`_Node`), the bounds and option tables both the schema
parser and the config checker read, and the small helpers they share (error paths, numbers).
Pure data: no I/O, nothing from the host services."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import re2

from plugbox.errors import ConfigError

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
