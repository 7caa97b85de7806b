-- The device authorization grant (OAuth/DeviceGrant.cs): one row per login a CLI started, until the CLI collects
-- its token, the person denies it, or it expires. The device code is stored as its SHA-256; the token a person
-- approved waits here sealed with the key-encryption key until the CLI collects it (at most the code's lifetime).
CREATE TABLE device_codes (
    device_code_hash TEXT    PRIMARY KEY,
    user_code        TEXT    NOT NULL UNIQUE,
    client_id        TEXT    NOT NULL,
    scope            TEXT,
    device_name      TEXT,
    requested_from   TEXT,
    user_agent       TEXT,
    created_at       TEXT    NOT NULL,
    expires_at       TEXT    NOT NULL,
    interval_seconds INTEGER NOT NULL,
    last_polled_at   TEXT,
    status           TEXT    NOT NULL,
    decided_by       INTEGER,
    decided_at       TEXT,
    token_id         INTEGER,
    sealed_token     TEXT
);
CREATE INDEX ix_device_codes_expires ON device_codes (expires_at);

-- User codes typed at /device are throttled like passwords, on counters of their own: 'code_user' (the account that
-- types) and 'code_address'. SQLite cannot change a CHECK constraint in place, so the table is rebuilt, rows kept.
CREATE TABLE login_throttle_new (
    kind         TEXT    NOT NULL CHECK (kind IN ('user', 'address', 'code_user', 'code_address')),
    subject      TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    window_start TEXT    NOT NULL,
    refused      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, subject)
);
INSERT INTO login_throttle_new (kind, subject, attempts, window_start, refused)
    SELECT kind, subject, attempts, window_start, refused FROM login_throttle;
DROP TABLE login_throttle;
ALTER TABLE login_throttle_new RENAME TO login_throttle;
CREATE INDEX ix_login_throttle_window ON login_throttle (window_start);
