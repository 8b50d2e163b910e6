"""The config form a UI renders for a plugin (`GET /api/plugins/{id}/config-ui`), derived from its
validated `configSchema`: one field per property, in declaration order, with the widget to draw,
its label, constraints and current (masked) value. Owns only this translation; validation stays
with `plugbox.config_schema`, which a submitted form still passes through (`PUT .../config`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["config_form"]

_CONSTRAINTS = ("description", "default", "enum", "min", "max", "pattern")


def _widget(node: Mapping[str, Any]) -> str:
    kind = node.get("type")
    if node.get("secret") is True:
        return "password"
    if "enum" in node:
        return "select"
    return {"string": "text", "textarea": "textarea", "number": "number", "boolean": "checkbox",
            "array": "list", "object": "group"}.get(str(kind), "text")


def _label(name: str) -> str:
    """`timeoutMs` -> `Timeout ms`: a readable title when the schema gives none."""
    words: list[str] = []
    for ch in name.replace("_", " "):
        if ch.isupper() and words and words[-1] and not words[-1].endswith(" "):
            words.append(" ")
        words.append(ch.lower())
    text = "".join(words).strip()
    return text[:1].upper() + text[1:]


def _fields(node: Mapping[str, Any], values: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    props = node.get("properties")
    if not isinstance(props, Mapping):
        return []
    required = node.get("required")
    listed = set(required) if isinstance(required, list) else set()
    out: list[dict[str, Any]] = []
    for name, child in props.items():
        if not isinstance(child, Mapping):
            continue
        path = f"{prefix}{name}"
        field: dict[str, Any] = {
            "path": path,
            "type": child.get("type"),
            "widget": _widget(child),
            "title": child.get("title") or _label(name),
            "required": child.get("required") is True or name in listed,
            "secret": child.get("secret") is True,
        }
        field.update({k: child[k] for k in _CONSTRAINTS if k in child})
        value = values.get(name) if isinstance(values, Mapping) else None
        if child.get("type") == "object":
            field["fields"] = _fields(child, value if isinstance(value, Mapping) else {}, path + ".")
        else:
            field["value"] = value
        if child.get("type") == "array" and isinstance(child.get("items"), Mapping):
            field["items"] = {"type": child["items"].get("type"), "widget": _widget(child["items"])}
        out.append(field)
    return out


def config_form(schema: Mapping[str, Any] | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """`{"fields": [...]}`; no schema means no form (`fields` empty, `configurable` false)."""
    if schema is None:
        return {"configurable": False, "fields": []}
    return {"configurable": True, "fields": _fields(schema, values, "")}
