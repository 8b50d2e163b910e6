"""Schema migrations: plain SQL files, one directory per backend (`sqlite/`, `postgres/`), named
`NNNN_what.sql` and applied in number order, each once.

`apply` runs inside the caller's write transaction: the files not yet listed in `schema_migrations`
run statement by statement, then are recorded, so a failed migration leaves nothing half-applied.
A file holds plain statements separated by `;` and `--` comments, nothing that needs a real SQL
parser (no semicolons inside literals, no procedural bodies). A change to the schema is a new file
in both directories; an applied file is never edited.

This module knows no store and no driver: it gets a `Connection` from the backend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from plugbox.storage.db import Connection

__all__ = ["Migration", "apply", "migrations"]

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_COMMENT = re.compile(r"--[^\n]*")
_TABLE = "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def migrations(dialect: str) -> list[Migration]:
    """Every migration file of the backend, in version order."""
    found: list[Migration] = []
    for entry in resources.files(__name__).joinpath(dialect).iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        text = _COMMENT.sub("", entry.read_text(encoding="utf-8"))
        statements = tuple(s.strip() for s in text.split(";") if s.strip())
        found.append(Migration(int(match.group(1)), entry.name, statements))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"migrations/{dialect}: two files share a version number: {versions}")
    return found


def apply(conn: Connection, dialect: str) -> list[str]:
    """Apply the migrations not yet recorded, in the caller's transaction; returns their names."""
    conn.execute(_TABLE)
    done = {int(row[0]) for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    applied: list[str] = []
    for migration in migrations(dialect):
        if migration.version in done:
            continue
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (migration.version, migration.name))
        applied.append(migration.name)
    return applied
