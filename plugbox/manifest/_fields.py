"""The generic JSON field readers every part of the manifest check shares: a required or optional
string, a boolean, a list of non-empty strings, a nested object. Each failure is a ManifestError
naming the field; a JSON null counts as absent. Knows no manifest rule beyond the type."""

from __future__ import annotations

from typing import Any

from plugbox.errors import ManifestError


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


def _object(doc: dict[str, Any], key: str, field: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ManifestError(field, "type", "must be a JSON object")
    return value
