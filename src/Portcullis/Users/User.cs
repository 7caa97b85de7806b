namespace Portcullis.Users;

/// <summary>
/// A principal: a person (<see cref="PrincipalKind.User"/>) or a configured service. Both own tokens,
/// so they share one table and one name space.
/// </summary>
internal sealed class User
{
    public long Id { get; set; }
    public required string Username { get; set; }
    public required string NormalizedUsername { get; set; }
    public required string Kind { get; set; }
    public string? PasswordHash { get; set; }
    public bool IsAdmin { get; set; }
    public bool IsDisabled { get; set; }

    /// <summary>For services: the scopes configured for them. People's rights come from <see cref="IsAdmin"/>.</summary>
    public string? Scopes { get; set; }

    /// <summary>Raised when the password changes or the user is disabled; JWTs carry it and die when it moves.</summary>
    public int CredentialVersion { get; set; }

    public DateTime CreatedAt { get; set; }
    public DateTime UpdatedAt { get; set; }

    /// <summary>The OpenID Provider (its name in <c>Auth:Oidc:Providers</c>) the person logs in through; null for a local account.</summary>
    public string? ExternalProvider { get; set; }

    /// <summary>The person's <c>sub</c> at <see cref="ExternalProvider"/>: what finds them at every login, whatever their name.</summary>
    public string? ExternalSubject { get; set; }

    /// <summary>Where the account comes from: <c>local</c>, or <c>oidc:NAME</c>.</summary>
    public string Source => ExternalProvider is { } provider ? "oidc:" + provider : "local";

    public static string Normalize(string username) => username.ToLowerInvariant();
}

internal static class PrincipalKind
{
    public const string User = "user";
    public const string Service = "service";
}
