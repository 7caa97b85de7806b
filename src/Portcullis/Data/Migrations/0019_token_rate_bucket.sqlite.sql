-- The rate-limit buckets a token draws from (docs/token-policies.md, "Rate limit"): a rotation's successor shares its
-- predecessor's, so rotating does not refill them. NULL: the token's own (its id).
ALTER TABLE api_tokens ADD COLUMN rate_bucket INTEGER;
