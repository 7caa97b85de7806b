namespace Portcullis.OAuth;

/// <summary>
/// An OAuth client (docs/decisions.md): a <c>client_id</c> and one <c>pcc_</c> secret, owned by the user who
/// created it, acting for that user with at most its own scopes. Only the SHA-256 of the secret is stored.
/// </summary>
internal sealed class OAuthClient
{
    public long Id { get; set; }

    /// <summary>The public identifier, e.g. <c>client-3k9x…</c>; random, never reused.</summary>
    public required string ClientId { get; set; }

    public long OwnerId { get; set; }
    public required string Name { get; set; }
    public required string Scopes { get; set; }

    /// <summary>Lowercase hex SHA-256 of the whole secret text.</summary>
    public required string SecretHash { get; set; }

    public required string SecretHint { get; set; }

    /// <summary>Moves on every rotation or revocation of the secret; the client's JWTs carry it (<c>pcv</c>).</summary>
    public int SecretVersion { get; set; }

    public DateTime SecretCreatedAt { get; set; }

    /// <summary>Set when the secret was revoked through <c>/auth/revoke</c>; the client works again after a rotation.</summary>
    public DateTime? SecretRevokedAt { get; set; }

    public DateTime CreatedAt { get; set; }
    public string? CreatedBy { get; set; }
}
