-- People who log in through an OpenID Provider (docs/single-sign-on.md): the provider's name in Auth:Oidc:Providers and
-- the person's subject ('sub') there. A person is found by these at every login, never by name; NULL for local accounts.
ALTER TABLE users ADD COLUMN external_provider TEXT;
ALTER TABLE users ADD COLUMN external_subject TEXT;
CREATE UNIQUE INDEX users_external_identity ON users (external_provider, external_subject);
