-- What each host observed of each plugin (plugbox/lifecycle/registry.py): its status, last error and
-- the breaker's failure count, one row per (plugin, host). The operator's intent (enabled, config,
-- sessions) stays one row per plugin in plugin_registry; hosts sharing a database each run the
-- plugin, and one host's crash must neither hide nor overwrite another's "running".
CREATE TABLE plugin_host_status (
    plugin_id            TEXT COLLATE "C" NOT NULL,
    host_id              TEXT COLLATE "C" NOT NULL,
    status               TEXT NOT NULL,
    error                TEXT,
    consecutive_failures BIGINT NOT NULL,
    updated_at           DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (plugin_id, host_id)
);
