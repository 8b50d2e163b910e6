-- Async ingress routes: the durable queue of verified requests and the dedupOn keys
-- (plugbox/ingress/store.py). IF NOT EXISTS: a database made before migrations may hold them.
CREATE TABLE IF NOT EXISTS ingress_deliveries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    plugin_id   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    route       TEXT NOT NULL,
    request     BLOB NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    next_at     REAL NOT NULL,
    last_status INTEGER,
    last_error  TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ingress_deliveries_due ON ingress_deliveries (state, next_at);
CREATE INDEX IF NOT EXISTS ingress_deliveries_plugin ON ingress_deliveries (plugin_id, state, route);

CREATE TABLE IF NOT EXISTS ingress_dedup (
    plugin_id   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    route       TEXT NOT NULL,
    key         TEXT NOT NULL,
    delivery_id TEXT,
    expires_at  REAL NOT NULL,
    PRIMARY KEY (plugin_id, instance_id, route, key)
);
CREATE INDEX IF NOT EXISTS ingress_dedup_age ON ingress_dedup (plugin_id, expires_at);
