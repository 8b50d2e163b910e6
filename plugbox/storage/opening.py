"""Which database backend the settings name, opened: the one place that knows both backends
(`plugbox.storage.db` is the contract they keep and imports neither)."""

from __future__ import annotations

from plugbox.errors import ConfigError
from plugbox.settings import Settings
from plugbox.storage.db import Database
from plugbox.storage.sqlite import SqliteDatabase

__all__ = ["open_database"]


def open_database(settings: Settings, *, host_id: str = "") -> Database:
    """The database the settings name: PostgreSQL for a `postgresql://` (or `postgres://`) URL,
    else the SQLite file `plugbox.db` in the data directory. `host_id` names this host to the
    others sharing a PostgreSQL database (`Database.live_hosts`)."""
    url = settings.database_url
    if url.startswith(("postgresql://", "postgres://")):
        from plugbox.storage.postgres import PostgresDatabase  # psycopg is loaded only when used

        return PostgresDatabase(
            url,
            pool_size=settings.database_pool_size,
            statement_timeout_ms=settings.database_statement_timeout_ms,
            host_id=host_id,
        )
    if url:
        raise ConfigError("database_url", "expected empty (SQLite) or a postgresql:// URL")
    return SqliteDatabase(settings.data_path / "plugbox.db", settings.storage_busy_timeout_ms)
