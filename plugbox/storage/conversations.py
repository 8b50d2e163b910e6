"""The conversation records behind `ctx.conversations`, `ctx.handover` and `ctx.mappings` (SPEC §3).

A *conversation* is a thread a plugin keeps with a chat on one session, usually mirrored in an
outside system (a helpdesk, a CRM: the *provider*, where it has an *external id*). Three tables, each
namespaced by plugin id, so one plugin never sees another's rows:

- `conversation_messages`: every text sent through `conversations.send`, with the engine's message
  id. At most `messages_per_plugin` (setting `conversation_messages_per_plugin`) rows per plugin
  are kept; the oldest of its own go first (its count, never the shared `seq`: another plugin's sends
  must not cost it its records), found through the (plugin_id, seq) index.
- `conversation_handover`: who handles a conversation now, `bot`, `human` or `closed`, keyed by a
  reference (the plugin's conversation id), with the session and chat the reference was linked to
  when it was set (`chat_of`: its mapping, else its latest sent message; none: it gates nothing).
  Setting it returns the previous state. The chats some plugin holds in `human` are also kept in
  memory (`human_owners`), since every inbound message asks (`plugbox.handover`); a plugin may hold
  at most `human_chats_per_plugin` chats so (setting `handover_human_chats_per_plugin`), which
  bounds the host memory it makes every host keep, and all plugins together `human_chats_total`
  (`handover_human_chats_total`), shared as the storage total is: each plugin holding chats may
  hold min(its bound, total / plugins holding chats), never refused for what others hold. On a shared
  database every handover write announces its plugin (topic `handover`), and the other hosts
  re-read that plugin's chats within about a second: announcements are gathered and every plugin
  announced re-read in one read at most every `FOLLOW_EVERY_S` (`changed_elsewhere`), so a plugin
  writing a thousand times a second costs every other host four reads a second, not a thousand
  (each is a database round trip on its loop, which no plugin's budget is charged for).
- `conversation_mappings`: conversationId <-> (provider, externalId), with the session and chat the
  conversation lives on. `upsert` is keyed by conversationId; an external id already linked to
  another conversation of the same plugin is refused, never silently moved. At most
  `rows_per_plugin` (setting `conversation_rows_per_plugin`) mappings and as many handover rows per plugin.

Counting. The bounds above never count a plugin's rows: a plugin sitting at its bound and asking for
more would otherwise cost the database writer, which every plugin shares, a walk of up to 100,000
rows per write (refused writes included; each costs the plugin only one page of its write budget).
`conversation_counts` holds the rows each plugin holds of each kind (`messages`, `handover`,
`mappings`: a row per plugin and kind, none at zero; rows rather than a column per table, so each
write changes the one row of its kind and a kind can be added without touching the others). Every
statement here that adds or removes a conversation row changes it in the same transaction, by the
rows the statement really changed (`rowcount`; a new handover reference or mapping is an INSERT ...
DO NOTHING, an existing one an UPDATE, `_put`), and an uninstall drops the plugin's counts with its
rows. So a bound reads one row, the rolling trim picks the oldest rows through the index, and a write
costs the writer the same at 10 rows as at the bound. The writes of one plugin are serialised, across
hosts on a shared database too (the per-owner lock), so the counts are exact on both backends; a
refused write rolls its count back with it. Migration 0011 filled the table from the rows an older
database held. No bound is checked before the write is queued: it would be one more read on the
event loop for every write (a round trip on PostgreSQL), to spare the writer a refused write that now
costs it a few point reads and a rollback.

Every row is charged to the plugin's storage quota (and its share of the host's total, `quota.Quota`)
at what it takes on disk (`quota.row_cost`, its
index entries included), the same quota as its keys, and every write to its `WriteBudget`, queued as
the plugin's own; a message dropped by the rolling bound is credited back. Values arrive validated by
the capability layer (lengths, types, the state enum); this module checks no permissions or session
scope. Records are returned as camelCase dicts, like the envelopes.

(Longer than most modules: three tables that share one quota, one counts table and one set of
chats held in memory; split by table, each part would reach into the others' counts and holds.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from plugbox.errors import StorageError
from plugbox.settings import DEFAULTS
from plugbox.storage.db import Connection, Database
from plugbox.storage.quota import Quota, WriteBudget, drop_usage, row_cost
from plugbox.totals import share

__all__ = ["FOLLOW_EVERY_S", "HANDOVER_STATES", "TOPIC", "ConversationStore"]

TOPIC = "handover"  # what a handover write announces to other hosts on a shared database
FOLLOW_EVERY_S = 0.25  # announced plugins are re-read together at most this often

log = logging.getLogger(__name__)
HANDOVER_STATES = ("bot", "human", "closed")

_MAPPING_COLUMNS = "conversation_id, provider, external_id, session_id, chat_id, updated_at"
_REAL = 8  # a REAL column (timestamps)


def _nbytes(*texts: str | None) -> int:
    return sum(len(t.encode()) for t in texts if t is not None)


# The rows a plugin holds in each table, by kind (`conversation_counts`, see the module docstring).
_MESSAGES, _HANDOVER, _MAPPINGS = "messages", "handover", "mappings"
_ADD_COUNT = ("INSERT INTO conversation_counts (plugin_id, kind, n) VALUES (?, ?, ?) ON CONFLICT (plugin_id, kind) "
              "DO UPDATE SET n = conversation_counts.n + excluded.n RETURNING n")
# What `_message_cost` needs of the stored messages the rolling bound drops (to credit them back): the
# plugin's oldest `?`, through the (plugin_id, seq) index. The texts are fetched and measured here:
# the two backends spell "bytes of a TEXT" differently.
_DROPPED_TEXTS = (
    "SELECT seq, plugin_id, conversation_id, session_id, chat_id, message_id, text, provider, external_id "
    "FROM conversation_messages WHERE plugin_id = ? ORDER BY seq LIMIT ?"
)


def _stored_message_cost(row: tuple[str | None, ...]) -> int:
    plugin_id, conversation_id, *others = row
    return _message_cost(_nbytes(plugin_id), _nbytes(conversation_id), _nbytes(*others))


def _message_cost(plugin_id_bytes: int, conversation_bytes: int, other_bytes: int) -> int:
    """The row in the rowid table, its entry in the by-conversation index and in the (plugin, seq)
    one (migration 0011 charged the rows stored before it that last entry)."""
    row = plugin_id_bytes + conversation_bytes + other_bytes + _REAL + 8
    return (row_cost(row, index=False) + row_cost(plugin_id_bytes + conversation_bytes + 8)
            + row_cost(plugin_id_bytes + 8))


def _handover_cost(plugin_id: str, ref: str, state: str, session_id: str | None = None,
                   chat_id: str | None = None) -> int:
    return row_cost(_nbytes(plugin_id, ref, state, session_id, chat_id) + _REAL)


def _mapping_cost(plugin_id: str, cid: str, provider: str, external: str, session: str, chat: str) -> int:
    """The row and its UNIQUE (plugin, provider, external id) index entry, which carries the key."""
    return row_cost(_nbytes(plugin_id, cid, provider, external, session, chat) + _REAL) + row_cost(
        _nbytes(plugin_id, provider, external, cid)
    )


class ConversationStore:
    def __init__(
        self,
        db: Database,
        *,
        messages_per_plugin: int = DEFAULTS.conversation_messages_per_plugin,
        rows_per_plugin: int = DEFAULTS.conversation_rows_per_plugin,
        human_chats_per_plugin: int = DEFAULTS.handover_human_chats_per_plugin,
        human_chats_total: int = DEFAULTS.handover_human_chats_total,
        quota_bytes: int = DEFAULTS.storage_quota_bytes,
        write_budget: WriteBudget | None = None,
        total_bytes: int | None = DEFAULTS.storage_total_bytes,
        quota: Quota | None = None,
    ) -> None:
        self._db = db
        self.quota = quota or Quota(quota_bytes, total_bytes)
        self.messages_per_plugin = messages_per_plugin
        self.rows_per_plugin = rows_per_plugin
        self.human_chats_per_plugin = human_chats_per_plugin
        self.human_chats_total = human_chats_total
        self.quota_bytes = self.quota.plugin_bytes
        self.write_budget = write_budget or WriteBudget.from_settings(DEFAULTS)
        # Which chats a plugin holds in `human`: read at start, kept by this store's writes and, on
        # a shared database, by `follow` when another host announces a change.
        self._human: dict[tuple[str, str], set[str]] = {}  # (session, chat) -> plugins holding it in `human`
        # plugin -> the chats it holds in `human`: forgetting one plugin's (`follow`, on every other
        # host at each of its handover writes) costs what that plugin holds, not what all plugins hold
        self._held: dict[str, set[tuple[str, str]]] = {}
        self._stale: set[str] = set()  # plugins another host announced, not re-read yet
        self._follow_timer: asyncio.TimerHandle | None = None
        self.follow()

    def changed_elsewhere(self, plugin_id: str) -> None:
        """Another host announced a handover write of `plugin_id`: re-read its chats with the next
        batch, at most `FOLLOW_EVERY_S` from now, however many writes it announces meanwhile."""
        self._stale.add(plugin_id)
        if self._follow_timer is None:
            self._follow_timer = asyncio.get_running_loop().call_later(FOLLOW_EVERY_S, self._follow_stale)

    def _follow_stale(self) -> None:
        self._follow_timer = None
        stale, self._stale = self._stale, set()
        try:
            self.follow(*sorted(stale))
        except StorageError as exc:  # (the database is gone: the host is stopping, or a resync follows)
            log.warning("chats handed to a human not re-read for %d plugins: %s", len(stale), exc)

    def close(self) -> None:
        """Stop following other hosts (the host is stopping)."""
        if self._follow_timer is not None:
            self._follow_timer.cancel()
            self._follow_timer = None

    def follow(self, *plugin_ids: str) -> None:
        """Re-read which chats the plugins `plugin_ids` (none given: every plugin) hold in `human`:
        another host changed them. One read for all of them."""
        where = f"AND plugin_id IN ({', '.join('?' * len(plugin_ids))})" if plugin_ids else ""
        rows = self._db.read(lambda c: c.execute(
            "SELECT plugin_id, session_id, chat_id FROM conversation_handover "
            f"WHERE state = 'human' AND session_id IS NOT NULL {where}", plugin_ids).fetchall())
        if not plugin_ids:
            self._human.clear()
            self._held.clear()
        for plugin_id in plugin_ids:
            self._release_all(plugin_id)
        for owner, session_id, chat_id in rows:
            self._hold(owner, (session_id, chat_id))


    def check_room(self, plugin_id: str, envelope: Mapping[str, Any]) -> None:
        """Refuse (StorageError) a `record_sent` that could not be stored, before the text is sent."""
        self.write_budget.check(plugin_id)
        cost = _envelope_cost(plugin_id, envelope, "x" * 64)  # the engine's id is not known yet
        self._db.read(lambda c: self.quota.check(c, plugin_id, cost, "recording this conversation message"))

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
        cost = _envelope_cost(plugin_id, envelope, message_id)
        await self.write_budget.spend(plugin_id, cost)

        def write(conn: Connection) -> int:
            cur = conn.execute(
                "INSERT INTO conversation_messages (plugin_id, conversation_id, session_id, chat_id, message_id, "
                "text, provider, external_id, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
                row,
            )
            seq = int(cur.fetchone()[0])  # an INSERT of one row that did not raise added one
            kept = _count(conn, plugin_id, _MESSAGES, 1)
            freed = 0
            if kept > self.messages_per_plugin:
                dropped = conn.execute(_DROPPED_TEXTS, (plugin_id, kept - self.messages_per_plugin)).fetchall()
                freed = sum(_stored_message_cost(tuple(r[1:])) for r in dropped)
                gone = conn.execute("DELETE FROM conversation_messages WHERE plugin_id = ? AND seq <= ?",
                                    (plugin_id, dropped[-1][0])).rowcount
                _count(conn, plugin_id, _MESSAGES, -gone)
            self.quota.charge(conn, plugin_id, cost - freed, "recording a conversation message")
            return seq

        return await self._db.write(write, owner=plugin_id)

    def messages(self, plugin_id: str, conversation_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The conversation's recorded messages, oldest first; with `limit`, only the latest that many."""
        sql = ("SELECT seq, session_id, chat_id, message_id, text, provider, external_id, sent_at "
               "FROM conversation_messages WHERE plugin_id = ? AND conversation_id = ? ORDER BY seq DESC")
        params: tuple[Any, ...] = (plugin_id, conversation_id)
        if limit is not None:  # no "LIMIT -1 means none" trick: that is SQLite's alone
            sql, params = sql + " LIMIT ?", (*params, limit)
        rows = self._db.read(lambda c: c.execute(sql, params).fetchall())[::-1]
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

    async def set_handover(self, plugin_id: str, ref: str, state: str,
                           chat: tuple[str, str] | None = None) -> dict[str, Any]:
        """Set who handles `ref` now; `chat` is the (session, chat) it gates, None for none."""
        if state not in HANDOVER_STATES:
            raise StorageError(f"handover state {state!r} is not one of {', '.join(HANDOVER_STATES)}")
        now = time.time()
        session_id, chat_id = chat if chat is not None else (None, None)
        if state == "human" and chat is not None:
            self._check_hold(plugin_id, chat)
        cost = _handover_cost(plugin_id, ref, state, session_id, chat_id)
        await self.write_budget.spend(plugin_id, cost)

        def write(conn: Connection) -> tuple[str | None, tuple[str, str] | None]:
            """(the previous state, the chat this write stops the plugin holding in `human`, if any)"""
            found = conn.execute(
                "SELECT state, session_id, chat_id FROM conversation_handover WHERE plugin_id = ? AND ref = ?",
                (plugin_id, ref),
            ).fetchone()
            if found is None:
                _check_room(conn, _HANDOVER, plugin_id, "handover references", self.rows_per_plugin)
            old = 0 if found is None else _handover_cost(plugin_id, ref, *found)
            self.quota.charge(conn, plugin_id, cost - old, f"handover reference {ref!r}")
            _put(conn, _HANDOVER, plugin_id, found is None,
                 "INSERT INTO conversation_handover (plugin_id, ref, state, updated_at, session_id, chat_id) "
                 "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (plugin_id, ref) DO NOTHING",
                 (plugin_id, ref, state, now, session_id, chat_id),
                 "UPDATE conversation_handover SET state = ?, updated_at = ?, session_id = ?, chat_id = ? "
                 "WHERE plugin_id = ? AND ref = ?",
                 (state, now, session_id, chat_id, plugin_id, ref))
            self._db.announce(conn, TOPIC, plugin_id)
            if found is None or found[1] is None or (state == "human" and chat == (found[1], found[2])):
                return (None if found is None else found[0]), None
            old_chat = (found[1], found[2])
            # two conversations of the plugin may share one chat: it stays held while another is `human`
            other = conn.execute(
                "SELECT 1 FROM conversation_handover WHERE plugin_id = ? AND session_id = ? AND chat_id = ? "
                "AND state = 'human' LIMIT 1", (plugin_id, *old_chat)).fetchone()
            return found[0], (None if other else old_chat)

        previous, released = await self._db.write(write, owner=plugin_id)
        if released is not None:
            self._release(plugin_id, released)
        if state == "human" and chat is not None:
            self._hold(plugin_id, chat)
        return {"ref": ref, "state": state, "previous": previous, "updatedAt": now,
                "sessionId": session_id, "chatId": chat_id}

    def _check_hold(self, plugin_id: str, chat: tuple[str, str]) -> None:
        """Refuse (StorageError) a chat the plugin does not hold yet once it holds its most, or its
        share of the host's total. (Checked before the write: calls in flight together may pass it
        by as many as there are of them.)"""
        held = len(self._held.get(plugin_id, ()))
        if plugin_id in self._human.get(chat, ()):
            return  # held already: no more memory
        if held >= self.human_chats_per_plugin:
            raise StorageError(
                f"plugin {plugin_id!r} already holds {held} chats handed to a human, the most allowed "
                "(handover_human_chats_per_plugin): hand some back to the bot or close them first")
        holders = len(self._held) + (held == 0)  # a plugin is in `_held` while it holds a chat
        if held >= share(self.human_chats_per_plugin, self.human_chats_total, holders):
            raise StorageError(
                f"plugin {plugin_id!r} already holds {held} chats handed to a human, its share of "
                f"handover_human_chats_total ({self.human_chats_total} for the {holders} plugins holding "
                "chats): hand some back to the bot or close them first")

    def _hold(self, plugin_id: str, chat: tuple[str, str]) -> None:
        owners = self._human.setdefault(chat, set())
        if plugin_id not in owners:
            owners.add(plugin_id)
            self._held.setdefault(plugin_id, set()).add(chat)

    def _release(self, plugin_id: str, chat: tuple[str, str]) -> None:
        owners = self._human.get(chat)
        if owners is not None and plugin_id in owners:
            owners.discard(plugin_id)
            if not owners:
                del self._human[chat]
            chats = self._held[plugin_id]
            chats.discard(chat)
            if not chats:
                del self._held[plugin_id]

    def _release_all(self, plugin_id: str) -> None:
        for chat in list(self._held.get(plugin_id, ())):
            self._release(plugin_id, chat)

    def get_handover(self, plugin_id: str, ref: str) -> str | None:
        record = self.handover(plugin_id, ref)
        return None if record is None else str(record["state"])

    def handover(self, plugin_id: str, ref: str) -> dict[str, Any] | None:
        """`{"ref", "state", "updatedAt", "sessionId", "chatId"}` of the plugin's reference, or None."""
        row = self._db.read(
            lambda c: c.execute(
                "SELECT state, updated_at, session_id, chat_id FROM conversation_handover "
                "WHERE plugin_id = ? AND ref = ?", (plugin_id, ref)
            ).fetchone()
        )
        if row is None:
            return None
        return {"ref": ref, "state": row[0], "updatedAt": row[1], "sessionId": row[2], "chatId": row[3]}

    def human_owners(self, session_id: str, chat_id: str) -> frozenset[str]:
        """The plugins that hold this chat in `human` (empty: a bot may answer it). Memory only."""
        owners = self._human.get((session_id, chat_id))
        return frozenset(owners) if owners else frozenset()

    def chat_of(self, plugin_id: str, ref: str) -> tuple[str, str] | None:
        """The (session, chat) the plugin's conversation `ref` lives on: its mapping, else the chat
        of its latest recorded message; None when the plugin never linked it to a chat."""
        mapping = self.get_mapping(plugin_id, ref)
        if mapping is not None:
            return mapping["sessionId"], mapping["chatId"]
        row = self._db.read(lambda c: c.execute(
            "SELECT session_id, chat_id FROM conversation_messages WHERE plugin_id = ? AND conversation_id = ? "
            "ORDER BY seq DESC LIMIT 1", (plugin_id, ref)).fetchone())
        return None if row is None else (row[0], row[1])

    # -- mappings ----------------------------------------------------------------------------------

    async def upsert_mapping(self, plugin_id: str, mapping: Mapping[str, str]) -> dict[str, Any]:
        """Create or replace the mapping of `mapping["conversationId"]`."""
        now = time.time()
        cid, provider, external = mapping["conversationId"], mapping["provider"], mapping["externalId"]
        cost = _mapping_cost(plugin_id, cid, provider, external, mapping["sessionId"], mapping["chatId"])
        await self.write_budget.spend(plugin_id, cost)

        def write(conn: Connection) -> None:
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
                "SELECT provider, external_id, session_id, chat_id FROM conversation_mappings "
                "WHERE plugin_id = ? AND conversation_id = ?",
                (plugin_id, cid),
            ).fetchone()
            if exists is None:
                _check_room(conn, _MAPPINGS, plugin_id, "mappings", self.rows_per_plugin)
            old = 0 if exists is None else _mapping_cost(plugin_id, cid, *exists)
            self.quota.charge(conn, plugin_id, cost - old, f"mapping of conversation {cid!r}")
            session_id, chat_id = mapping["sessionId"], mapping["chatId"]
            # (the target names the key: a clash on the external id still raises, never passes silently)
            _put(conn, _MAPPINGS, plugin_id, exists is None,
                 f"INSERT INTO conversation_mappings (plugin_id, {_MAPPING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                 "ON CONFLICT (plugin_id, conversation_id) DO NOTHING",
                 (plugin_id, cid, provider, external, session_id, chat_id, now),
                 "UPDATE conversation_mappings SET provider = ?, external_id = ?, session_id = ?, chat_id = ?, "
                 "updated_at = ? WHERE plugin_id = ? AND conversation_id = ?",
                 (provider, external, session_id, chat_id, now, plugin_id, cid))

        await self._db.write(write, owner=plugin_id)
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

        def write(conn: Connection) -> None:
            for table in ("conversation_messages", "conversation_handover", "conversation_mappings"):
                conn.execute(f"DELETE FROM {table} WHERE plugin_id = ?", (plugin_id,))
            conn.execute("DELETE FROM conversation_counts WHERE plugin_id = ?", (plugin_id,))  # none left
            drop_usage(conn, plugin_id)  # the shared quota
            self._db.announce(conn, TOPIC, plugin_id)

        await self._db.write(write, owner=plugin_id)
        self._release_all(plugin_id)


def _check_room(conn: Connection, kind: str, plugin_id: str, what: str, rows_max: int) -> None:
    """Refuse (StorageError) a new row of `kind` once the plugin holds `rows_max`: one row read."""
    count = _rows_held(conn, plugin_id, kind)
    if count >= rows_max:
        raise StorageError(f"plugin {plugin_id!r} already has {count} {what}, the most allowed")


def _count(conn: Connection, plugin_id: str, kind: str, delta: int) -> int:
    """Change the plugin's count of `kind` by `delta` rows; returns the new count. A plugin left
    with none has no row."""
    if not delta:
        return _rows_held(conn, plugin_id, kind)
    (n,) = conn.execute(_ADD_COUNT, (plugin_id, kind, delta)).fetchone()
    if int(n) <= 0:
        conn.execute("DELETE FROM conversation_counts WHERE plugin_id = ? AND kind = ?", (plugin_id, kind))
    return int(n)


def _rows_held(conn: Connection, plugin_id: str, kind: str) -> int:
    row = conn.execute("SELECT n FROM conversation_counts WHERE plugin_id = ? AND kind = ?",
                       (plugin_id, kind)).fetchone()
    return 0 if row is None else int(row[0])


def _put(conn: Connection, kind: str, plugin_id: str, new: bool, insert: str, insert_params: tuple[Any, ...],
         update: str, update_params: tuple[Any, ...]) -> None:
    """Insert the row (`new`: the write found none) or update it, counting the rows the INSERT
    really added. Should the row have come or gone since the write looked (not reached: the writes
    of one plugin are serialised, across hosts too), the other statement runs, so the row is written
    and the count stays exact either way."""
    if not new and conn.execute(update, update_params).rowcount:
        return
    added = conn.execute(insert, insert_params).rowcount
    if added:
        _count(conn, plugin_id, kind, added)
    else:
        conn.execute(update, update_params)


def _envelope_cost(plugin_id: str, envelope: Mapping[str, Any], message_id: str | None) -> int:
    others = _nbytes(envelope["sessionId"], envelope["chatId"], message_id, envelope["text"],
                     envelope.get("provider"), envelope.get("externalId"))
    return _message_cost(_nbytes(plugin_id), _nbytes(envelope["conversationId"]), others)


def _mapping_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "conversationId": row[0],
        "provider": row[1],
        "externalId": row[2],
        "sessionId": row[3],
        "chatId": row[4],
        "updatedAt": row[5],
    }
