-- Tokens handed over as one-time links (docs/token-policies.md, "Handing a token over"): the link's secret is stored
-- as its SHA-256; the token waits sealed with the key-encryption key until the first person to open the link reveals
-- it (then sealed_token is NULL), or until the link expires (the token was created revoked at that time).
CREATE TABLE token_links (
    link_hash    TEXT        PRIMARY KEY,
    token_id     INTEGER     NOT NULL UNIQUE REFERENCES api_tokens (id) ON DELETE CASCADE,
    sealed_token TEXT,
    created_by   TEXT        NOT NULL,
    created_at   TEXT        NOT NULL,
    expires_at   TEXT        NOT NULL,
    claimed_at   TEXT,
    claimed_from TEXT
);
