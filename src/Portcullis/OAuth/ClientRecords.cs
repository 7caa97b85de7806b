namespace Portcullis.OAuth;

internal sealed record CreateClientRequest(string? Name, string[]? Scopes);

/// <summary>The only response that carries a client secret; sent with <c>Cache-Control: no-store</c>.</summary>
public sealed record ClientSecretResponse(
    string ClientId,
    string ClientSecret,
    string Name,
    string[] Scopes,
    string Owner,
    string SecretHint,
    DateTime CreatedAt,
    DateTime SecretCreatedAt)
{
    internal static ClientSecretResponse From(OAuthClient c, string secret, string owner) =>
        new(c.ClientId, secret, c.Name, SplitScopes(c.Scopes), owner, c.SecretHint, c.CreatedAt, c.SecretCreatedAt);

    internal static string[] SplitScopes(string scopes) => scopes.Split(' ', StringSplitOptions.RemoveEmptyEntries);
}

public sealed record ClientResponse(
    string ClientId,
    string Name,
    string[] Scopes,
    string Owner,
    string SecretHint,
    string SecretStatus,
    DateTime CreatedAt,
    DateTime SecretCreatedAt)
{
    internal static ClientResponse From(OAuthClient c, string owner) =>
        new(c.ClientId, c.Name, ClientSecretResponse.SplitScopes(c.Scopes), owner, c.SecretHint,
            c.SecretRevokedAt is null ? "active" : "revoked", c.CreatedAt, c.SecretCreatedAt);
}
