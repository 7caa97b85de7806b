-- ASP.NET Core Data Protection keys (Data/DataProtectionKeys.cs): antiforgery tokens and session
-- cookies made by one instance must be readable by every other, so the key ring lives in the database.
CREATE TABLE data_protection_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    friendly_name TEXT    NOT NULL UNIQUE,
    xml           TEXT    NOT NULL,
    created_at    TEXT    NOT NULL
);
