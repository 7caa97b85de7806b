-- OAuth clients (docs/decisions.md): a client_id and one secret, stored as the SHA-256 of the pcc_ text,
-- owned by the user who created it. secret_version moves on every rotation or revocation of the
-- secret; the client's JWTs carry it and die when it moves.
CREATE TABLE oauth_clients (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id         TEXT    NOT NULL UNIQUE,
    owner_id          INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name              TEXT    NOT NULL,
    scopes            TEXT    NOT NULL,
    secret_hash       TEXT    NOT NULL UNIQUE,
    secret_hint       TEXT    NOT NULL,
    secret_version    INTEGER NOT NULL DEFAULT 0,
    secret_created_at TEXT    NOT NULL,
    secret_revoked_at TEXT,
    created_at        TEXT    NOT NULL,
    created_by        TEXT
);
CREATE UNIQUE INDEX ux_oauth_clients_owner_name ON oauth_clients (owner_id, name);

-- JWTs revoked through /auth/revoke, kept until they would have expired anyway.
CREATE TABLE revoked_jwts (
    jti        TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL,
    revoked_at TEXT NOT NULL,
    subject    TEXT
);
CREATE INDEX ix_revoked_jwts_expires ON revoked_jwts (expires_at);
