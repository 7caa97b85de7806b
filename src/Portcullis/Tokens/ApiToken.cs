namespace Portcullis.Tokens;

/// <summary>A personal or service API token. Only the SHA-256 of the secret is stored.</summary>
internal sealed class ApiToken
{
    public long Id { get; set; }
    public long OwnerId { get; set; }
    public required string Name { get; set; }
    public string? Description { get; set; }

    /// <summary>Lowercase hex SHA-256 of the whole token text.</summary>
    public required string TokenHash { get; set; }

    public required string Hint { get; set; }
    public required string Scopes { get; set; }
    public DateTime CreatedAt { get; set; }
    public string? CreatedBy { get; set; }
    public DateTime? ExpiresAt { get; set; }

    /// <summary>When the token stops (or stopped) working because it was revoked or rotated; may lie in the future during a rotation grace period.</summary>
    public DateTime? RevokedAt { get; set; }

    public long? ReplacedById { get; set; }

    /// <summary>How many requests the token may be accepted for, ever; null for no limit (docs/token-policies.md).</summary>
    public long? MaxUses { get; set; }

    /// <summary>How many requests it has been accepted for, counted only when <see cref="MaxUses"/> is set.</summary>
    public long Uses { get; set; }

    /// <summary>The CIDR ranges it may be used from, space-separated; null for anywhere (docs/token-policies.md).</summary>
    public string? AllowedCidrs { get; set; }

    /// <summary>Requests per second it may be used for, on each instance; null for no limit (docs/token-policies.md).</summary>
    public long? RatePerSecond { get; set; }

    /// <summary>Requests per minute it may be used for, on each instance; null for no limit.</summary>
    public long? RatePerMinute { get; set; }

    /// <summary>Whose rate-limit buckets it draws from, when not its own: the first of its line of rotations.</summary>
    public long? RateBucket { get; set; }

    public TokenRateLimit? RateLimit => RatePerSecond is null && RatePerMinute is null ? null : new(RatePerSecond, RatePerMinute);

    public DateTime? LastUsedAt { get; set; }
    public string? LastUsedIp { get; set; }

    public string Status(DateTime now) =>
        RevokedAt is { } r && r <= now ? TokenStatus.Revoked
        : ExpiresAt is { } e && e <= now ? TokenStatus.Expired
        : MaxUses is { } max && Uses >= max ? TokenStatus.Spent
        : TokenStatus.Active;
}

internal static class TokenStatus
{
    public const string Active = "active";
    public const string Expired = "expired";
    public const string Revoked = "revoked";

    /// <summary>Used as many times as it allows.</summary>
    public const string Spent = "spent";
}

/// <summary>Requests per token, scope they relied on, and UTC day, accumulated by the usage write-behind.</summary>
internal sealed class TokenScopeUsageDay
{
    public long TokenId { get; set; }
    public required string Scope { get; set; }
    public required string Day { get; set; }
    public long Count { get; set; }
}

/// <summary>Requests per token per UTC day, accumulated by the usage write-behind.</summary>
internal sealed class TokenUsageDay
{
    public long TokenId { get; set; }
    public required string Day { get; set; }
    public long Count { get; set; }
}
