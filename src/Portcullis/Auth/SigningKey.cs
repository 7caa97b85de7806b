namespace Portcullis.Auth;

/// <summary>A key pair for signing JWTs (ES256 or RS256), shared through the database by every instance.</summary>
internal sealed class SigningKey
{
    public required string Kid { get; set; }
    public required string Algorithm { get; set; }

    /// <summary>PKCS#8, base64.</summary>
    public required string PrivateKey { get; set; }

    public DateTime CreatedAt { get; set; }

    /// <summary>When a newer key took over signing; the key still verifies until the tokens it signed expire.</summary>
    public DateTime? RetiredAt { get; set; }
}
