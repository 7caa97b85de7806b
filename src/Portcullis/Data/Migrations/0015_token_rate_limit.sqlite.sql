-- How fast a token may be used (docs/token-policies.md): requests per second and per minute, each NULL for no limit.
ALTER TABLE api_tokens ADD COLUMN rate_per_second INTEGER;
ALTER TABLE api_tokens ADD COLUMN rate_per_minute INTEGER;
