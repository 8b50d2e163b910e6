"""What an OpenWA manifest carries that plugbox reads differently (docs/porting-from-openwa.md).

OpenWA plugins declare fields of their own; a manifest written for OpenWA must load here with each
difference *reported*, never silently dropped, and only a real incompatibility refused:

- `minOpenWAVersion` / `testedOpenWAVersion`: kept and shown (API, `plugins list`), checked to be
  `MAJOR.MINOR.PATCH`, never enforced: plugbox is not OpenWA, and `minHostVersion` is its floor.
- OpenWA's `message:annotation-*` events in `hooks`: plugbox has no annotations; the event is left
  out of `hooks` with a note that it is not supported here (any other unknown event stays an error,
  so that a typo still fails the load).
- `configUi` (OpenWA's sandboxed-iframe editor): not served; the note points at the form plugbox
  derives from `configSchema`.

Notes are plain sentences naming the field; the loader shows them as the plugin's warnings.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from plugbox.errors import ManifestError

__all__ = ["OpenWACompat", "openwa_compat"]

_VERSION = re.compile(r"[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,9}", re.ASCII)


class OpenWACompat(msgspec.Struct, frozen=True, kw_only=True):
    min_openwa_version: str | None = None
    tested_openwa_version: str | None = None
    notes: tuple[str, ...] = ()


def _version(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise ManifestError(key, "version", f"{value!r} is not MAJOR.MINOR.PATCH")
    return value


def openwa_compat(doc: dict[str, Any], dropped_hooks: list[tuple[int, str]]) -> OpenWACompat:
    """The OpenWA fields of `doc`, and a note for each one plugbox does not act on.
    `dropped_hooks` are the (index, event) pairs `hooks` left out (`unsupported_openwa_event`)."""
    notes = [f"hooks[{index}]: OpenWA event {event!r} is not supported here; the plugin will not receive it"
             for index, event in dropped_hooks]
    if doc.get("configUi") is not None:
        notes.append("configUi: OpenWA's iframe config editor is not served here; the operator's form comes "
                     "from configSchema (GET /api/plugins/{id}/config-ui)")
    return OpenWACompat(min_openwa_version=_version(doc, "minOpenWAVersion"),
                        tested_openwa_version=_version(doc, "testedOpenWAVersion"), notes=tuple(notes))
