-- Ingress instances an operator creates for a plugin, each with its own secrets (a JSON object of
-- manifest secret field name -> value) and an optional bound session (plugbox/ingress/instances.py).
CREATE TABLE IF NOT EXISTS ingress_instances (
    plugin_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    session_id  TEXT,
    secrets     TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (plugin_id, id)
);
