-- Installed plugin packages, as uploaded (a zip), so any host sharing the database can unpack and
-- run any installed plugin (plugbox/lifecycle/packages.py). Written only on a shared database.
CREATE TABLE IF NOT EXISTS plugin_packages (
    plugin_id  TEXT PRIMARY KEY,
    archive    BLOB NOT NULL,
    sha256     TEXT NOT NULL,
    updated_at REAL NOT NULL
);
