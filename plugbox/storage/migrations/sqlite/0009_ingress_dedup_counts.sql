-- The dedupOn keys each plugin holds (plugbox/ingress/store.py), kept by every write that adds or
-- removes an ingress_dedup row, in the same transaction, so the host-wide total is checked without
-- counting the whole table. One row per plugin holding keys; a plugin holding none has no row.
CREATE TABLE ingress_dedup_counts (
    plugin_id TEXT NOT NULL PRIMARY KEY,
    keys      INTEGER NOT NULL
);
-- A database made before this migration: count what it holds.
INSERT INTO ingress_dedup_counts (plugin_id, keys)
    SELECT plugin_id, count(*) FROM ingress_dedup GROUP BY plugin_id;
