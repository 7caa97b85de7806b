-- Subject tokens already traded at the token endpoint (docs/trusted-issuers.md, "Each token once"): the SHA-256 of the
-- issuer and the token's jti (or of the whole token, when it has no jti), kept until the token expires.
CREATE TABLE exchanged_subject_tokens (
    replay_key TEXT        PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX exchanged_subject_tokens_expiry ON exchanged_subject_tokens (expires_at);

-- The admin page lists recent exchanges, and GET /api/v1/audit?event= filters by name: both read one event's rows newest first.
CREATE INDEX audit_events_event ON audit_events (event, id);
