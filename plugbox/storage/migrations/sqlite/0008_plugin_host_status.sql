-- What each host observed of each plugin (plugbox/lifecycle/registry.py): its status, last error and
-- the breaker's failure count, one row per (plugin, host). The operator's intent (enabled, config,
-- sessions) stays one row per plugin in plugin_registry; hosts sharing a database each run the
-- plugin, and one host's crash must neither hide nor overwrite another's "running".
CREATE TABLE plugin_host_status (
    plugin_id            TEXT NOT NULL,
    host_id              TEXT NOT NULL,
    status               TEXT NOT NULL,
    error                TEXT,
    consecutive_failures INTEGER NOT NULL,
    updated_at           REAL NOT NULL,
    PRIMARY KEY (plugin_id, host_id)
);
