-- Which scope each request of a token relied on, per UTC day (docs/token-policies.md, "Narrowing"): the scope is
-- api, admin, services, or services:NAME. Accumulated by the usage write-behind, like token_usage.
CREATE TABLE token_scope_usage (
    token_id BIGINT  NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    scope    TEXT    NOT NULL,
    day      TEXT    NOT NULL,
    count    BIGINT  NOT NULL,
    PRIMARY KEY (token_id, scope, day)
);
