-- The plugins holding stored data (plugin_kv_usage.bytes > 0), counted in one row that
-- plugbox/storage/quota.py changes in the same transaction as a usage row whenever that usage
-- crosses zero, so the host's storage total reads one row on each growing write instead of counting
-- the usage table. Exactly one row (id 1).
CREATE TABLE plugin_kv_holders (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    holders INTEGER NOT NULL
);
-- A database made before this migration: count what it holds.
INSERT INTO plugin_kv_holders (id, holders) SELECT 1, count(*) FROM plugin_kv_usage WHERE bytes > 0;
-- The host-wide sweep of expired dedupOn keys (plugbox/ingress/dedup.py) takes them earliest first,
-- whichever plugin they belong to.
CREATE INDEX ingress_dedup_expiry ON ingress_dedup (expires_at);
