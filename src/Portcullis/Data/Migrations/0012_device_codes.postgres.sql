-- The device authorization grant (OAuth/DeviceGrant.cs): one row per login a CLI started, until the CLI collects
-- its token, the person denies it, or it expires. The device code is stored as its SHA-256; the token a person
-- approved waits here sealed with the key-encryption key until the CLI collects it (at most the code's lifetime).
CREATE TABLE device_codes (
    device_code_hash TEXT        PRIMARY KEY,
    user_code        TEXT        NOT NULL UNIQUE,
    client_id        TEXT        NOT NULL,
    scope            TEXT,
    device_name      TEXT,
    requested_from   TEXT,
    user_agent       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    interval_seconds INTEGER     NOT NULL,
    last_polled_at   TIMESTAMPTZ,
    status           TEXT        NOT NULL,
    decided_by       BIGINT,
    decided_at       TIMESTAMPTZ,
    token_id         BIGINT,
    sealed_token     TEXT
);
CREATE INDEX ix_device_codes_expires ON device_codes (expires_at);

-- User codes typed at /device are throttled like passwords, on counters of their own: 'code_user' (the account that
-- types) and 'code_address'.
ALTER TABLE login_throttle DROP CONSTRAINT login_throttle_kind_check;
ALTER TABLE login_throttle ADD CONSTRAINT login_throttle_kind_check CHECK (kind IN ('user', 'address', 'code_user', 'code_address'));
