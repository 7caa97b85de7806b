-- Tokens that work a given number of times (docs/token-policies.md): max_uses is the limit (NULL: no limit) and uses
-- counts the requests it has been accepted for, counted in the same statement that checks the limit.
ALTER TABLE api_tokens ADD COLUMN max_uses BIGINT;
ALTER TABLE api_tokens ADD COLUMN uses BIGINT NOT NULL DEFAULT 0;
