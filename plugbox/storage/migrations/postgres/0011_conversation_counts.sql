-- The rows each plugin holds in each conversation table (plugbox/storage/conversations.py), kept by
-- every write that adds or removes such a row, in the same transaction, so the per-plugin row
-- bounds read one row instead of counting the plugin's rows. One row per (plugin, kind) with rows;
-- none at zero. kind: 'messages' (conversation_messages), 'handover' (conversation_handover),
-- 'mappings' (conversation_mappings). Same table as sqlite/0011, in PostgreSQL types.
CREATE TABLE conversation_counts (
    plugin_id TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('messages', 'handover', 'mappings')),
    n         BIGINT NOT NULL,
    PRIMARY KEY (plugin_id, kind)
);
-- A database made before this migration: count what it holds.
INSERT INTO conversation_counts (plugin_id, kind, n)
    SELECT plugin_id, 'messages', count(*) FROM conversation_messages GROUP BY plugin_id;
INSERT INTO conversation_counts (plugin_id, kind, n)
    SELECT plugin_id, 'handover', count(*) FROM conversation_handover GROUP BY plugin_id;
INSERT INTO conversation_counts (plugin_id, kind, n)
    SELECT plugin_id, 'mappings', count(*) FROM conversation_mappings GROUP BY plugin_id;
-- The rolling message bound drops a plugin's oldest rows: found by this index, not by sorting all
-- the plugin's rows.
CREATE INDEX conversation_messages_by_seq ON conversation_messages (plugin_id, seq);
-- Each message row now has an entry in that index too: charge the rows already stored for it, as
-- conversations._message_cost now does (quota.row_cost(len(plugin_id) + 8) for an ASCII plugin id,
-- the figure both backends are charged), so a row pushed out later is credited what it was charged.
-- Only usage already above zero: the plugins holding data (plugin_kv_holders, 0010) stay as they are.
UPDATE plugin_kv_usage SET bytes = bytes + (
    SELECT c.n * ((length(c.plugin_id) + 16 + CASE WHEN length(c.plugin_id) + 14 < 128 THEN 1 ELSE 2 END) * 3 / 2)
    FROM conversation_counts c WHERE c.plugin_id = plugin_kv_usage.plugin_id AND c.kind = 'messages')
WHERE bytes > 0 AND plugin_id IN (SELECT plugin_id FROM conversation_counts WHERE kind = 'messages');
