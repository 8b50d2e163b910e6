"""Installed plugin packages kept in the database, so every host sharing it can run every plugin.

On a shared database (`Database.shared`) the installer stores each accepted upload here, as it came
(the zip), with its SHA-256, and announces it (topic `package`); another host unpacks it through its
own installer, with the same checks as an upload (`lifecycle.cluster`). An uninstall deletes the row.
On SQLite nothing is stored: the plugins directory is the one copy.

This module stores bytes; it checks no archive and runs nothing.
"""

from __future__ import annotations

import hashlib
import time

from plugbox.storage.db import Connection, Database

__all__ = ["TOPIC", "PackageStore"]

TOPIC = "package"


class PackageStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, plugin_id: str, archive: bytes) -> str:
        """Store (or replace) the plugin's package; returns its SHA-256 (hex)."""
        digest = hashlib.sha256(archive).hexdigest()

        def write(c: Connection) -> None:
            c.execute(
                "INSERT INTO plugin_packages (plugin_id, archive, sha256, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (plugin_id) DO UPDATE SET archive = excluded.archive, sha256 = excluded.sha256, "
                "updated_at = excluded.updated_at",
                (plugin_id, archive, digest, time.time()),
            )
            self._db.announce(c, TOPIC, plugin_id)

        await self._db.write(write, owner=plugin_id)
        return digest

    def digest(self, plugin_id: str) -> str | None:
        row = self._db.read(
            lambda c: c.execute("SELECT sha256 FROM plugin_packages WHERE plugin_id = ?", (plugin_id,)).fetchone()
        )
        return None if row is None else str(row[0])

    async def get(self, plugin_id: str) -> tuple[bytes, str] | None:
        """(archive, sha256) of the plugin, None if none is stored. Off the loop: packages are large."""
        row = await self._db.scan(
            lambda c: c.execute(
                "SELECT archive, sha256 FROM plugin_packages WHERE plugin_id = ?", (plugin_id,)
            ).fetchone()
        )
        return None if row is None else (bytes(row[0]), str(row[1]))

    def ids(self) -> list[str]:
        rows = self._db.read(lambda c: c.execute("SELECT plugin_id FROM plugin_packages ORDER BY plugin_id").fetchall())
        return [str(r[0]) for r in rows]

    async def delete(self, plugin_id: str) -> None:
        def write(c: Connection) -> None:
            c.execute("DELETE FROM plugin_packages WHERE plugin_id = ?", (plugin_id,))
            self._db.announce(c, TOPIC, plugin_id)

        await self._db.write(write, owner=plugin_id)
