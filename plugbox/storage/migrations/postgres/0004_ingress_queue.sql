-- Async ingress routes: the durable queue of verified requests and the dedupOn keys
-- (plugbox/ingress/store.py). Same tables as sqlite/0004, in PostgreSQL types.
CREATE TABLE IF NOT EXISTS ingress_deliveries (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    plugin_id   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    route       TEXT NOT NULL,
    request     BYTEA NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    next_at     DOUBLE PRECISION NOT NULL,
    last_status INTEGER,
    last_error  TEXT,
    created_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS ingress_deliveries_due ON ingress_deliveries (state, next_at);
CREATE INDEX IF NOT EXISTS ingress_deliveries_plugin ON ingress_deliveries (plugin_id, state, route);

CREATE TABLE IF NOT EXISTS ingress_dedup (
    plugin_id   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    route       TEXT NOT NULL,
    key         TEXT NOT NULL,
    delivery_id TEXT,
    expires_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (plugin_id, instance_id, route, key)
);
CREATE INDEX IF NOT EXISTS ingress_dedup_age ON ingress_dedup (plugin_id, expires_at);
