-- Web UI sessions (Auth/SessionStore.cs). The cookie carries a random id; only its SHA-256 is stored.
-- credential_version is the user's at login: a password change or a disable ends the session.
CREATE TABLE sessions (
    id_hash            TEXT    PRIMARY KEY,
    user_id            INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_version INTEGER NOT NULL,
    created_at         TEXT    NOT NULL,
    expires_at         TEXT    NOT NULL,
    revoked_at         TEXT,
    client_ip          TEXT,
    user_agent         TEXT
);
CREATE INDEX ix_sessions_user ON sessions (user_id);
CREATE INDEX ix_sessions_expires ON sessions (expires_at);
