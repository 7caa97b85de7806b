-- Failed-login counters (Auth/LoginThrottle.cs), shared by every instance. One row per counter:
-- kind 'user' (subject: the normalised username, whether or not such a user exists) or 'address'
-- (subject: the client address; IPv6 by /64). attempts counts the failed checks in the window plus
-- those in progress; refused counts the attempts turned away, so that only the first is audited.
-- A row whose window has ended is reset by its next attempt, or deleted by the periodic sweep.
CREATE TABLE login_throttle (
    kind         TEXT        NOT NULL CHECK (kind IN ('user', 'address')),
    subject      TEXT        NOT NULL,
    attempts     INTEGER     NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    refused      INTEGER     NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, subject)
);
CREATE INDEX ix_login_throttle_window ON login_throttle (window_start);
