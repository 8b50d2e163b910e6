-- The schema every host store uses, on the embedded SQLite backend.
-- IF NOT EXISTS: a database created before migrations existed already holds these tables.

-- kv: one namespace per plugin (plugbox/storage/kv.py)
CREATE TABLE IF NOT EXISTS plugin_kv (
    plugin_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    size      INTEGER NOT NULL,
    PRIMARY KEY (plugin_id, key)
) WITHOUT ROWID;

-- quota: bytes each plugin uses, keys and conversation records together (plugbox/storage/quota.py)
CREATE TABLE IF NOT EXISTS plugin_kv_usage (
    plugin_id TEXT PRIMARY KEY,
    bytes     INTEGER NOT NULL
) WITHOUT ROWID;

-- conversations, handover, mappings (plugbox/storage/conversations.py)
CREATE TABLE IF NOT EXISTS conversation_messages (
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
);
CREATE INDEX IF NOT EXISTS conversation_messages_by_conv ON conversation_messages (plugin_id, conversation_id);

CREATE TABLE IF NOT EXISTS conversation_handover (
    plugin_id  TEXT NOT NULL,
    ref        TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('bot', 'human', 'closed')),
    updated_at REAL NOT NULL,
    PRIMARY KEY (plugin_id, ref)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS conversation_mappings (
    plugin_id       TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    provider        TEXT NOT NULL,
    external_id     TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    chat_id         TEXT NOT NULL,
    updated_at      REAL NOT NULL,
    PRIMARY KEY (plugin_id, conversation_id),
    UNIQUE (plugin_id, provider, external_id)
) WITHOUT ROWID;

-- registry: one msgpack record per plugin (plugbox/lifecycle/registry.py)
CREATE TABLE IF NOT EXISTS plugin_registry (
    plugin_id TEXT PRIMARY KEY,
    record    BLOB NOT NULL
) WITHOUT ROWID;

-- outbound webhooks and their durable delivery queue (plugbox/webhooks/store.py)
CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,
    secret      TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    description TEXT NOT NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    subscription_id TEXT NOT NULL REFERENCES webhook_subscriptions(id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    session_id      TEXT,
    body            BLOB NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_at         REAL NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (state, next_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_sub ON webhook_deliveries (subscription_id, seq);
