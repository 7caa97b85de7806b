-- Services registered through the API (Gateway/ServicesApi.cs). Those from configuration are not stored.
CREATE TABLE gateway_services (
    id          BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT        NOT NULL,
    version     TEXT        NOT NULL,
    upstream    TEXT        NOT NULL,
    protected   BOOLEAN     NOT NULL DEFAULT TRUE,
    description TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT,
    UNIQUE (name, version)
);
