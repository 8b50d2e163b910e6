-- The schema every host store uses, on PostgreSQL. Same tables and columns as sqlite/0001; the
-- differences are PostgreSQL's spelling: BYTEA for BLOB, DOUBLE PRECISION for REAL, identity
-- columns for AUTOINCREMENT, and COLLATE "C" on keys so they sort by UTF-8 bytes (code points),
-- as SQLite does and as the kv store's prefix ranges assume.

-- kv: one namespace per plugin (plugbox/storage/kv.py)
CREATE TABLE plugin_kv (
    plugin_id TEXT COLLATE "C" NOT NULL,
    key       TEXT COLLATE "C" NOT NULL,
    value     BYTEA NOT NULL,
    size      BIGINT NOT NULL,
    PRIMARY KEY (plugin_id, key)
);

-- quota: bytes each plugin uses, keys and conversation records together (plugbox/storage/quota.py)
CREATE TABLE plugin_kv_usage (
    plugin_id TEXT COLLATE "C" PRIMARY KEY,
    bytes     BIGINT NOT NULL
);

-- conversations, handover, mappings (plugbox/storage/conversations.py)
CREATE TABLE conversation_messages (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plugin_id       TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    chat_id         TEXT NOT NULL,
    message_id      TEXT,
    text            TEXT NOT NULL,
    provider        TEXT,
    external_id     TEXT,
    sent_at         DOUBLE PRECISION NOT NULL
);
CREATE INDEX conversation_messages_by_conv ON conversation_messages (plugin_id, conversation_id);

CREATE TABLE conversation_handover (
    plugin_id  TEXT NOT NULL,
    ref        TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('bot', 'human', 'closed')),
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (plugin_id, ref)
);

CREATE TABLE conversation_mappings (
    plugin_id       TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    provider        TEXT NOT NULL,
    external_id     TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    chat_id         TEXT NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (plugin_id, conversation_id),
    UNIQUE (plugin_id, provider, external_id)
);

-- registry: one msgpack record per plugin (plugbox/lifecycle/registry.py)
CREATE TABLE plugin_registry (
    plugin_id TEXT COLLATE "C" PRIMARY KEY,
    record    BYTEA NOT NULL
);

-- outbound webhooks and their durable delivery queue (plugbox/webhooks/store.py)
CREATE TABLE webhook_subscriptions (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,
    secret      TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    description TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE webhook_deliveries (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    subscription_id TEXT NOT NULL REFERENCES webhook_subscriptions(id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    session_id      TEXT,
    body            BYTEA NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_at         DOUBLE PRECISION NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);
CREATE INDEX webhook_deliveries_sub ON webhook_deliveries (subscription_id, seq);
