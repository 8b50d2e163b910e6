"""The catalog: plugins an operator can install without uploading anything (`GET /api/catalog`).

It is a directory of plugin directories (setting `catalog_dir`; by default the example plugins
shipped beside the package). Each is validated exactly as an install would validate it, so the
listing says which would be refused and why; installing one packs it with `plugbox pack`'s rules
and hands the zip to the ordinary installer, so nothing here writes to the plugins directory.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from plugbox import __version__
from plugbox.errors import PluginNotFound
from plugbox.lifecycle.pack import packed
from plugbox.manifest import discover, load_manifest
from plugbox.settings import Settings

__all__ = ["catalog_archive", "catalog_entries"]


def catalog_entries(settings: Settings, reserved_ids: Collection[str],
                    installed: Mapping[str, str]) -> list[dict[str, Any]]:
    """One entry per catalog directory, by name: the manifest's summary and `installed` (the
    version installed now, or None); a directory that would be refused has `error` instead."""
    out: list[dict[str, Any]] = []
    for path in discover(settings.catalog_path):
        try:
            m = load_manifest(path, host_version=__version__, reserved_ids=reserved_ids,
                              allow_unsigned_ingress=settings.allow_unsigned_ingress)
        except Exception as exc:  # ManifestError, unreadable files: the entry says so, the rest list
            out.append({"id": path.name, "installable": False, "error": str(exc)})
            continue
        out.append({"id": m.id, "name": m.name, "version": m.version, "description": m.description,
                    "permissions": sorted(m.permissions), "minHostVersion": m.min_host_version,
                    "installable": True, "installed": installed.get(m.id)})
    return out


def catalog_archive(settings: Settings, plugin_id: str) -> bytes:
    """The zip of catalog plugin `plugin_id`; PluginNotFound if the catalog has none by that id."""
    for path in discover(settings.catalog_path):
        if path.name == plugin_id and (path / "manifest.json").is_file():
            return packed(Path(path), settings)[1]
    raise PluginNotFound(plugin_id)
