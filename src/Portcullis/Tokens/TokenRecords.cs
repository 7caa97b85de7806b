namespace Portcullis.Tokens;

/// <summary>The API's token records (Portcullis.Client/ApiRecords.cs) made from what the database holds.</summary>
internal static class TokenRecords
{
    extension(CreatedTokenResponse)
    {
        public static CreatedTokenResponse From(ApiToken t, string plaintext, string owner) =>
            new(t.Id, t.Name, t.Description, plaintext, t.Hint, SplitScopes(t.Scopes), t.CreatedAt, t.ExpiresAt, owner, t.MaxUses, AllowedSources.ToNames(t.AllowedCidrs), t.RateLimit);
    }

    extension(TokenResponse)
    {
        public static TokenResponse From(ApiToken t, string owner, DateTime now) =>
            new(t.Id, t.Name, t.Description, t.Hint, SplitScopes(t.Scopes), t.CreatedAt, t.ExpiresAt, t.LastUsedAt, t.LastUsedIp, t.Status(now), owner, t.ReplacedById, t.MaxUses, t.Uses,
                AllowedSources.ToNames(t.AllowedCidrs), t.RateLimit);
    }

    /// <summary>Scopes are stored as one space-separated string.</summary>
    public static string[] SplitScopes(string scopes) => scopes.Split(' ', StringSplitOptions.RemoveEmptyEntries);
}
