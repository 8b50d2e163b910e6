"""The conversation records behind `ctx.conversations`, `ctx.handover` and `ctx.mappings` (SPEC §3).

A *conversation* is a thread a plugin keeps with a chat on one session, usually mirrored in an
outside system (a helpdesk, a CRM: the *provider*, where it has an *external id*). Three tables, each
namespaced by plugin id, so one plugin never sees another's rows:

- `conversation_messages`: every text sent through `conversations.send`, with the engine's message
  id. At most `messages_per_plugin` (setting `conversation_messages_per_plugin`) rows per plugin
  are kept; the oldest go first.
- `conversation_handover`: who handles a conversation now, `bot`, `human` or `closed`, keyed by a
  reference (the plugin's conversation id). Setting it returns the previous state.
- `conversation_mappings`: conversationId <-> (provider, externalId), with the session and chat the
  conversation lives on. `upsert` is keyed by conversationId; an external id already linked to
  another conversation of the same plugin is refused, never silently moved. At most
  `rows_per_plugin` (setting `conversation_rows_per_plugin`) mappings and as many handover rows per plugin.

Values arrive validated by the capability layer (lengths, types, the state enum); this module checks
no permissions or session scope. Records are returned as camelCase dicts, like the envelopes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from plugbox.errors import StorageError
from plugbox.settings import DEFAULTS
from plugbox.storage.db import Database

__all__ = ["HANDOVER_STATES", "ConversationStore"]

HANDOVER_STATES = ("bot", "human", "closed")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversation_messages (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        plugin_id       TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        session_id      TEXT NOT NULL,
        chat_id         TEXT NOT NULL,
        message_id      TEXT,
        text            TEXT NOT NULL,
        provider        TEXT,
        external_id     TEXT,
        sent_at         REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS conversation_messages_by_conv ON conversation_messages (plugin_id, conversation_id)",
    """CREATE TABLE IF NOT EXISTS conversation_handover (
        plugin_id  TEXT NOT NULL,
        ref        TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('bot', 'human', 'closed')),
        updated_at REAL NOT NULL,
        PRIMARY KEY (plugin_id, ref)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS conversation_mappings (
        plugin_id       TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        provider        TEXT NOT NULL,
        external_id     TEXT NOT NULL,
        session_id      TEXT NOT NULL,
        chat_id         TEXT NOT NULL,
        updated_at      REAL NOT NULL,
        PRIMARY KEY (plugin_id, conversation_id),
        UNIQUE (plugin_id, provider, external_id)
    ) WITHOUT ROWID""",
)

_MAPPING_COLUMNS = "conversation_id, provider, external_id, session_id, chat_id, updated_at"


class ConversationStore:
    def __init__(
        self,
        db: Database,
        *,
        messages_per_plugin: int = DEFAULTS.conversation_messages_per_plugin,
        rows_per_plugin: int = DEFAULTS.conversation_rows_per_plugin,
    ) -> None:
        self._db = db
        self.messages_per_plugin = messages_per_plugin
        self.rows_per_plugin = rows_per_plugin
        db.write_sync(self._create)

    @staticmethod
    def _create(conn: sqlite3.Connection) -> None:
        for statement in _SCHEMA:
            conn.execute(statement)

    # -- messages ----------------------------------------------------------------------------------

    async def record_sent(self, plugin_id: str, envelope: Mapping[str, Any], message_id: str | None) -> int:
        """Record one sent text; returns its sequence number."""
        row = (
            plugin_id,
            envelope["conversationId"],
            envelope["sessionId"],
            envelope["chatId"],
            message_id,
            envelope["text"],
            envelope.get("provider"),
            envelope.get("externalId"),
            time.time(),
        )

        def write(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO conversation_messages (plugin_id, conversation_id, session_id, chat_id, message_id, "
                "text, provider, external_id, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            seq = int(cur.lastrowid or 0)
            conn.execute(
                "DELETE FROM conversation_messages WHERE plugin_id = ? AND seq <= ?",
                (plugin_id, seq - self.messages_per_plugin),
            )
            return seq

        return await self._db.write(write)

    def messages(self, plugin_id: str, conversation_id: str) -> list[dict[str, Any]]:
        rows = self._db.read(
            lambda c: c.execute(
                "SELECT seq, session_id, chat_id, message_id, text, provider, external_id, sent_at "
                "FROM conversation_messages WHERE plugin_id = ? AND conversation_id = ? ORDER BY seq",
                (plugin_id, conversation_id),
            ).fetchall()
        )
        return [
            {
                "seq": r[0],
                "conversationId": conversation_id,
                "sessionId": r[1],
                "chatId": r[2],
                "messageId": r[3],
                "text": r[4],
                "provider": r[5],
                "externalId": r[6],
                "sentAt": r[7],
            }
            for r in rows
        ]

    # -- handover ----------------------------------------------------------------------------------

    async def set_handover(self, plugin_id: str, ref: str, state: str) -> dict[str, Any]:
        if state not in HANDOVER_STATES:
            raise StorageError(f"handover state {state!r} is not one of {', '.join(HANDOVER_STATES)}")
        now = time.time()

        def write(conn: sqlite3.Connection) -> str | None:
            found = conn.execute(
                "SELECT state FROM conversation_handover WHERE plugin_id = ? AND ref = ?", (plugin_id, ref)
            ).fetchone()
            if found is None:
                _check_room(conn, "conversation_handover", plugin_id, "handover references", self.rows_per_plugin)
            conn.execute(
                "INSERT INTO conversation_handover (plugin_id, ref, state, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (plugin_id, ref) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                (plugin_id, ref, state, now),
            )
            return found[0] if found else None

        previous = await self._db.write(write)
        return {"ref": ref, "state": state, "previous": previous, "updatedAt": now}

    def get_handover(self, plugin_id: str, ref: str) -> str | None:
        row = self._db.read(
            lambda c: c.execute(
                "SELECT state FROM conversation_handover WHERE plugin_id = ? AND ref = ?", (plugin_id, ref)
            ).fetchone()
        )
        return row[0] if row else None

    # -- mappings ----------------------------------------------------------------------------------

    async def upsert_mapping(self, plugin_id: str, mapping: Mapping[str, str]) -> dict[str, Any]:
        """Create or replace the mapping of `mapping["conversationId"]`."""
        now = time.time()
        cid, provider, external = mapping["conversationId"], mapping["provider"], mapping["externalId"]

        def write(conn: sqlite3.Connection) -> None:
            owner = conn.execute(
                "SELECT conversation_id FROM conversation_mappings WHERE plugin_id = ? AND provider = ? "
                "AND external_id = ?",
                (plugin_id, provider, external),
            ).fetchone()
            if owner is not None and owner[0] != cid:
                raise StorageError(
                    f"external id {external!r} of provider {provider!r} is already mapped to conversation {owner[0]!r}"
                )
            exists = conn.execute(
                "SELECT 1 FROM conversation_mappings WHERE plugin_id = ? AND conversation_id = ?", (plugin_id, cid)
            ).fetchone()
            if exists is None:
                _check_room(conn, "conversation_mappings", plugin_id, "mappings", self.rows_per_plugin)
            conn.execute(
                f"INSERT INTO conversation_mappings (plugin_id, {_MAPPING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (plugin_id, conversation_id) DO UPDATE SET provider = excluded.provider, "
                "external_id = excluded.external_id, session_id = excluded.session_id, "
                "chat_id = excluded.chat_id, updated_at = excluded.updated_at",
                (plugin_id, cid, provider, external, mapping["sessionId"], mapping["chatId"], now),
            )

        await self._db.write(write)
        return _mapping_row((cid, provider, external, mapping["sessionId"], mapping["chatId"], now))

    def get_mapping(self, plugin_id: str, conversation_id: str) -> dict[str, Any] | None:
        row = self._db.read(
            lambda c: c.execute(
                f"SELECT {_MAPPING_COLUMNS} FROM conversation_mappings WHERE plugin_id = ? AND conversation_id = ?",
                (plugin_id, conversation_id),
            ).fetchone()
        )
        return _mapping_row(row) if row else None

    def get_mapping_by_provider(self, plugin_id: str, provider: str, external_id: str) -> dict[str, Any] | None:
        row = self._db.read(
            lambda c: c.execute(
                f"SELECT {_MAPPING_COLUMNS} FROM conversation_mappings WHERE plugin_id = ? AND provider = ? "
                "AND external_id = ?",
                (plugin_id, provider, external_id),
            ).fetchone()
        )
        return _mapping_row(row) if row else None

    # -- whole plugin ------------------------------------------------------------------------------

    async def delete_plugin(self, plugin_id: str) -> None:
        """Forget everything a plugin recorded (uninstall)."""

        def write(conn: sqlite3.Connection) -> None:
            for table in ("conversation_messages", "conversation_handover", "conversation_mappings"):
                conn.execute(f"DELETE FROM {table} WHERE plugin_id = ?", (plugin_id,))

        await self._db.write(write)


def _check_room(conn: sqlite3.Connection, table: str, plugin_id: str, what: str, rows_max: int) -> None:
    (count,) = conn.execute(f"SELECT count(*) FROM {table} WHERE plugin_id = ?", (plugin_id,)).fetchone()
    if count >= rows_max:
        raise StorageError(f"plugin {plugin_id!r} already has {count} {what}, the most allowed")


def _mapping_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "conversationId": row[0],
        "provider": row[1],
        "externalId": row[2],
        "sessionId": row[3],
        "chatId": row[4],
        "updatedAt": row[5],
    }
