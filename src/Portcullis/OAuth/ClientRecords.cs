namespace Portcullis.OAuth;

/// <summary>The API's client records (Portcullis.Client/ApiRecords.cs) made from what the database holds.</summary>
internal static class ClientRecords
{
    extension(ClientSecretResponse)
    {
        public static ClientSecretResponse From(OAuthClient c, string secret, string owner) =>
            new(c.ClientId, secret, c.Name, Tokens.TokenRecords.SplitScopes(c.Scopes), owner, c.SecretHint, c.CreatedAt, c.SecretCreatedAt);
    }

    extension(ClientResponse)
    {
        public static ClientResponse From(OAuthClient c, string owner) =>
            new(c.ClientId, c.Name, Tokens.TokenRecords.SplitScopes(c.Scopes), owner, c.SecretHint,
                c.SecretRevokedAt is null ? "active" : "revoked", c.CreatedAt, c.SecretCreatedAt);
    }
}
