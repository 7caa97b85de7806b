CREATE TABLE users (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    username            TEXT    NOT NULL,
    normalized_username TEXT    NOT NULL UNIQUE,
    kind                TEXT    NOT NULL CHECK (kind IN ('user', 'service')),
    password_hash       TEXT,
    is_admin            INTEGER NOT NULL DEFAULT 0,
    is_disabled         INTEGER NOT NULL DEFAULT 0,
    scopes              TEXT,
    credential_version  INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL
);

CREATE TABLE api_tokens (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           TEXT    NOT NULL,
    description    TEXT,
    token_hash     TEXT    NOT NULL UNIQUE,
    hint           TEXT    NOT NULL,
    scopes         TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    created_by     TEXT,
    expires_at     TEXT,
    revoked_at     TEXT,
    replaced_by_id INTEGER,
    last_used_at   TEXT,
    last_used_ip   TEXT
);
CREATE INDEX ix_api_tokens_owner ON api_tokens (owner_id, name);

CREATE TABLE token_usage (
    token_id INTEGER NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    day      TEXT    NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (token_id, day)
);

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    actor       TEXT,
    actor_id    INTEGER,
    subject     TEXT,
    subject_id  INTEGER,
    token_id    TEXT,
    client_ip   TEXT,
    details     TEXT
);
CREATE INDEX ix_audit_events_actor ON audit_events (actor_id, id);
CREATE INDEX ix_audit_events_subject ON audit_events (subject_id, id);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    private_key TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    retired_at  TEXT
);
