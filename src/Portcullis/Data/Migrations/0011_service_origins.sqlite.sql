-- Replicas (one upstream per line in gateway_services.upstream) and their active health check.
ALTER TABLE gateway_services ADD COLUMN health_check_path TEXT;
ALTER TABLE gateway_services ADD COLUMN health_check_interval_seconds INTEGER;

-- A session on a service's own origin (Gateway/ServiceOrigins.cs) is a child of a web session: it names the
-- service it opens and the SHA-256 of its parent's id, and ends whenever the parent does.
ALTER TABLE sessions ADD COLUMN service TEXT;
ALTER TABLE sessions ADD COLUMN parent_hash TEXT;
CREATE INDEX ix_sessions_parent ON sessions (parent_hash);

-- Single-use codes that carry a web session over to a service origin (at most 60 s, used once).
CREATE TABLE handshake_codes (
    code_hash    TEXT PRIMARY KEY,
    session_hash TEXT NOT NULL,
    service      TEXT NOT NULL,
    state_hash   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE INDEX ix_handshake_codes_expires ON handshake_codes (expires_at);
