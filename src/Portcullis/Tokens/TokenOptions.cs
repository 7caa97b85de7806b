using Microsoft.Extensions.Options;

namespace Portcullis.Tokens;

internal sealed class TokenOptions
{
    public const string Section = "Tokens";

    /// <summary>The <c>pc</c> in <c>pcp_</c>, <c>pcs_</c>, <c>pcc_</c>.</summary>
    public string Prefix { get; set; } = "pc";

    /// <summary>Lifetime of a token created without an expiry; null means it never expires.</summary>
    public int? DefaultLifetimeDays { get; set; }

    /// <summary>Longest lifetime a token may be given; null means no limit (and "never expires" is allowed).</summary>
    public int? MaxLifetimeDays { get; set; }

    /// <summary>How many verified credentials (positive and negative) the in-memory cache holds.</summary>
    public int CacheSize { get; set; } = 100_000;

    /// <summary>How long a cached credential is trusted before it is re-read, as a safety net behind invalidation.</summary>
    public TimeSpan CacheMaxAge { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Database reads per second for well-formed tokens that are not among the tokens this instance knows of (one
    /// created on another instance a moment ago, before its notice arrived); the rest are refused from memory.
    /// </summary>
    public int UnknownTokenLookupsPerSecond { get; set; } = 100;

    /// <summary>How long an unknown token is remembered as unknown.</summary>
    public TimeSpan NegativeCacheAge { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How often last-used times and usage counts are written to the database.</summary>
    public TimeSpan UsageFlushInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Longest grace period a rotation may keep the old token working.</summary>
    public TimeSpan MaxRotationGrace { get; set; } = TimeSpan.FromDays(7);
}

/// <summary>Checks these settings at start; every problem names the key and the fix (docs/configuration.md).</summary>
internal sealed class TokenOptionsValidator : IValidateOptions<TokenOptions>
{
    public ValidateOptionsResult Validate(string? name, TokenOptions o)
    {
        var errors = new List<string>();
        if (string.IsNullOrEmpty(o.Prefix) || o.Prefix.Length > 8 || !o.Prefix.All(char.IsAsciiLetterLower))
            errors.Add($"Tokens:Prefix is '{o.Prefix}'. Set it to 1 to 8 lowercase ASCII letters, e.g. 'pc'.");
        if (o.MaxLifetimeDays is < 1 or > 36_500)
            errors.Add($"Tokens:MaxLifetimeDays is {o.MaxLifetimeDays}. Set it to a number of days from 1 to 36500, or remove it for no limit.");
        if (o.DefaultLifetimeDays is < 1 or > 36_500)
            errors.Add($"Tokens:DefaultLifetimeDays is {o.DefaultLifetimeDays}. Set it to a number of days from 1 to 36500, or remove it for tokens that never expire.");
        if (o.MaxLifetimeDays is { } max && o.DefaultLifetimeDays > max)
            errors.Add($"Tokens:DefaultLifetimeDays ({o.DefaultLifetimeDays}) is longer than Tokens:MaxLifetimeDays ({max}). Lower it to at most {max}.");
        if (o.CacheSize is < 100 or > 50_000_000)
            errors.Add($"Tokens:CacheSize is {o.CacheSize}. Set it between 100 and 50000000 entries.");
        if (o.CacheMaxAge < TimeSpan.FromSeconds(1))
            errors.Add("Tokens:CacheMaxAge must be at least 00:00:01.");
        if (o.UnknownTokenLookupsPerSecond is < 1 or > 1_000_000)
            errors.Add($"Tokens:UnknownTokenLookupsPerSecond is {o.UnknownTokenLookupsPerSecond}. Set it between 1 and 1000000 (default 100).");
        if (o.NegativeCacheAge < TimeSpan.Zero)
            errors.Add("Tokens:NegativeCacheAge must not be negative.");
        if (o.UsageFlushInterval < TimeSpan.FromMilliseconds(100) || o.UsageFlushInterval > TimeSpan.FromMinutes(10))
            errors.Add("Tokens:UsageFlushInterval must be between 00:00:00.1 and 00:10:00.");
        return Result(errors);
    }

    private static ValidateOptionsResult Result(List<string> errors) =>
        errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
}
