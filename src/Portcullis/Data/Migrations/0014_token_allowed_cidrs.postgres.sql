-- Where a token may be used from (docs/token-policies.md): its CIDR ranges, space-separated and canonical;
-- NULL for anywhere.
ALTER TABLE api_tokens ADD COLUMN allowed_cidrs TEXT;
