namespace Portcullis.Tokens;

public sealed record CreateTokenRequest(
    string? Name,
    string? Description,
    long? ExpiresInDays,
    string? ExpiresAt,
    string[]? Scopes,
    string? Owner);

internal sealed record RotateTokenRequest(long? GraceSeconds);

/// <summary>The only response that ever carries a token's secret; sent with <c>Cache-Control: no-store</c>.</summary>
public sealed record CreatedTokenResponse(
    long Id,
    string Name,
    string? Description,
    string Token,
    string TokenHint,
    string[] Scopes,
    DateTime CreatedAt,
    DateTime? ExpiresAt,
    string Owner)
{
    internal static CreatedTokenResponse From(ApiToken t, string plaintext, string owner) =>
        new(t.Id, t.Name, t.Description, plaintext, t.Hint, SplitScopes(t.Scopes), t.CreatedAt, t.ExpiresAt, owner);

    internal static string[] SplitScopes(string scopes) => scopes.Split(' ', StringSplitOptions.RemoveEmptyEntries);
}

public sealed record TokenResponse(
    long Id,
    string Name,
    string? Description,
    string TokenHint,
    string[] Scopes,
    DateTime CreatedAt,
    DateTime? ExpiresAt,
    DateTime? LastUsedAt,
    string? LastUsedIp,
    string Status,
    string Owner,
    long? ReplacedById)
{
    internal static TokenResponse From(ApiToken t, string owner, DateTime now) =>
        new(t.Id, t.Name, t.Description, t.Hint, CreatedTokenResponse.SplitScopes(t.Scopes), t.CreatedAt, t.ExpiresAt,
            t.LastUsedAt, t.LastUsedIp, t.Status(now), owner, t.ReplacedById);
}

public sealed record UsageDay(string Date, long Count);

public sealed record TokenUsageResponse(long TokenId, int Days, long Total, UsageDay[] Usage);
