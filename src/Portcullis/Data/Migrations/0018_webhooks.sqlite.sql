-- Webhooks (docs/notifications.md). Events someone may want to hear of are marked in the audit log as they are
-- written (notify); the dispatcher claims marked events, makes one delivery per webhook that wants it, and clears the
-- mark in the same transaction, so every event is fanned out once whatever the number of instances.
ALTER TABLE audit_events ADD COLUMN notify INTEGER;
CREATE INDEX ix_audit_events_notify ON audit_events (id) WHERE notify IS NOT NULL;

-- A person's own webhooks, for events about their own tokens. The secret signs the deliveries, so it is kept sealed
-- with the key-encryption key rather than hashed.
CREATE TABLE webhooks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url           TEXT NOT NULL,
    events        TEXT NOT NULL,
    sealed_secret TEXT NOT NULL,
    secret_hint   TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX ix_webhooks_owner ON webhooks (owner_id);

-- One row per event and webhook: pending until delivered (2xx) or given up (failed) after Notifications:RetryFor.
-- locked_until is the lease of the instance attempting it; webhook_id is NULL for the webhooks of the configuration.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     TEXT NOT NULL UNIQUE,
    webhook_id      INTEGER REFERENCES webhooks (id) ON DELETE CASCADE,
    owner_id        INTEGER,
    url             TEXT NOT NULL,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    locked_until    TEXT,
    delivered_at    TEXT,
    last_status     INTEGER,
    last_error      TEXT
);
CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX ix_webhook_deliveries_created ON webhook_deliveries (created_at);

-- Notices sent about a token's end (expiring in 7 days, in 1 day, expired): each at most once, on any instance.
CREATE TABLE token_notices (
    token_id INTEGER NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    notice   TEXT NOT NULL,
    PRIMARY KEY (token_id, notice)
);
