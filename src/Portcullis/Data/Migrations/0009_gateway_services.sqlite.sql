-- Services registered through the API (Gateway/ServicesApi.cs). Those from configuration are not stored.
CREATE TABLE gateway_services (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    upstream    TEXT    NOT NULL,
    protected   INTEGER NOT NULL DEFAULT 1,
    description TEXT,
    created_at  TEXT    NOT NULL,
    created_by  TEXT,
    UNIQUE (name, version)
);
