using Microsoft.Extensions.Options;

namespace Portcullis.Hosting;

/// <summary>Top-level settings (no section).</summary>
internal sealed class ServerOptions
{
    /// <summary>The URL clients use to reach this server; the JWT issuer. Defaults to the first of <c>urls</c>.</summary>
    public string? PublicUrl { get; set; }

    /// <summary>Where SQLite, the lock file and other local state live.</summary>
    public string DataDir { get; set; } = "portcullis-data";
}

internal sealed class DatabaseOptions
{
    public const string Section = "Database";

    /// <summary><c>sqlite</c> (embedded, default) or <c>postgres</c>.</summary>
    public string Provider { get; set; } = "sqlite";

    /// <summary>Required for postgres; for sqlite it defaults to <c>DATA_DIR/portcullis.db</c>.</summary>
    public string? ConnectionString { get; set; }

    public bool IsPostgres => string.Equals(Provider, "postgres", StringComparison.OrdinalIgnoreCase);
}

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

internal sealed class JwtOptions
{
    public const string Section = "Jwt";

    public TimeSpan AccessTokenLifetime { get; set; } = TimeSpan.FromHours(1);

    public TimeSpan CliTokenLifetime { get; set; } = TimeSpan.FromDays(7);

    public string Audience { get; set; } = "portcullis";

    /// <summary>Tolerance for clocks that disagree; kept far below the usual 5 minutes.</summary>
    public TimeSpan ClockSkew { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How new signing keys sign: <c>ES256</c> (P-256, the default) or <c>RS256</c> (RSA 2048, which RFC 9068 §2.1 has every
    /// conforming party support, for resource servers that have nothing else). Existing keys keep their own algorithm.
    /// </summary>
    public string SigningAlgorithm { get; set; } = Auth.SigningKeys.Es256;
}

internal sealed class AuthOptions
{
    public const string Section = "Auth";

    /// <summary>Whether <c>/auth/token</c> accepts username and password (the web UI login always does).</summary>
    public bool PasswordGrant { get; set; } = true;

    public int PasswordIterations { get; set; } = 210_000;

    /// <summary>How many password hashes may run at once; the rest wait, so verification keeps its CPU.</summary>
    public int MaxConcurrentPasswordHashes { get; set; } = Math.Max(1, Environment.ProcessorCount / 2);

    /// <summary>How long a login may wait for a free hashing slot before it is told to retry.</summary>
    public TimeSpan PasswordHashQueueTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Wrong passwords allowed per username (existing or not) in one <see cref="FailedLoginWindow"/>; then 429 until it ends.</summary>
    public int MaxFailedLoginsPerUser { get; set; } = 10;

    /// <summary>Failed password and client-secret checks allowed per client address (IPv6: per /64) in one window; 0 switches this limit off.</summary>
    public int MaxFailedLoginsPerAddress { get; set; } = 50;

    /// <summary>The fixed window failed logins are counted in; it opens at a counter's first attempt.</summary>
    public TimeSpan FailedLoginWindow { get; set; } = TimeSpan.FromMinutes(15);
}

/// <summary>
/// Checks every setting at start and reports all problems at once, each naming the key and the fix,
/// in the manner of YARP's ConfigValidator.
/// </summary>
internal sealed class OptionsValidator :
    IValidateOptions<DatabaseOptions>, IValidateOptions<TokenOptions>, IValidateOptions<JwtOptions>,
    IValidateOptions<AuthOptions>, IValidateOptions<ServerOptions>
{
    public ValidateOptionsResult Validate(string? name, DatabaseOptions o)
    {
        var errors = new List<string>();
        if (!string.Equals(o.Provider, "sqlite", StringComparison.OrdinalIgnoreCase) && !o.IsPostgres)
            errors.Add($"Database:Provider is '{o.Provider}'. Set it to 'sqlite' (the embedded default) or 'postgres'.");
        if (o.IsPostgres && string.IsNullOrWhiteSpace(o.ConnectionString))
            errors.Add("Database:ConnectionString is required when Database:Provider is 'postgres'. Set it to e.g. 'Host=127.0.0.1;Port=5432;Database=portcullis;Username=portcullis;Password=...'.");
        return Result(errors);
    }

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

    public ValidateOptionsResult Validate(string? name, JwtOptions o)
    {
        var errors = new List<string>();
        if (o.AccessTokenLifetime < TimeSpan.FromMinutes(1) || o.AccessTokenLifetime > TimeSpan.FromDays(1))
            errors.Add($"Jwt:AccessTokenLifetime is {o.AccessTokenLifetime}. Set it between 00:01:00 and 1.00:00:00 (default 01:00:00).");
        if (o.CliTokenLifetime < TimeSpan.FromMinutes(1) || o.CliTokenLifetime > TimeSpan.FromDays(90))
            errors.Add($"Jwt:CliTokenLifetime is {o.CliTokenLifetime}. Set it between 00:01:00 and 90.00:00:00 (default 7.00:00:00).");
        if (string.IsNullOrWhiteSpace(o.Audience))
            errors.Add("Jwt:Audience must not be empty (default 'portcullis').");
        if (!Auth.SigningKeys.Algorithms.Contains(o.SigningAlgorithm))
            errors.Add($"Jwt:SigningAlgorithm is '{o.SigningAlgorithm}'. Set it to ES256 (the default) or RS256.");
        if (o.ClockSkew < TimeSpan.Zero || o.ClockSkew > TimeSpan.FromSeconds(30))
            errors.Add($"Jwt:ClockSkew is {o.ClockSkew}. Set it between 00:00:00 and 00:00:30.");
        return Result(errors);
    }

    public ValidateOptionsResult Validate(string? name, AuthOptions o)
    {
        var errors = new List<string>();
        if (o.PasswordIterations < 210_000)
            errors.Add($"Auth:PasswordIterations is {o.PasswordIterations}. OWASP asks for at least 210000 with PBKDF2-HMAC-SHA512; set it to 210000 or more.");
        if (o.MaxConcurrentPasswordHashes < 1)
            errors.Add("Auth:MaxConcurrentPasswordHashes must be at least 1.");
        if (o.MaxFailedLoginsPerUser is < 1 or > 10_000)
            errors.Add($"Auth:MaxFailedLoginsPerUser is {o.MaxFailedLoginsPerUser}. Set it between 1 and 10000 (default 10).");
        if (o.MaxFailedLoginsPerAddress is < 0 or > 1_000_000)
            errors.Add($"Auth:MaxFailedLoginsPerAddress is {o.MaxFailedLoginsPerAddress}. Set it between 1 and 1000000 (default 50), or to 0 to switch the per-address limit off.");
        if (o.FailedLoginWindow < TimeSpan.FromSeconds(1) || o.FailedLoginWindow > TimeSpan.FromDays(1))
            errors.Add($"Auth:FailedLoginWindow is {o.FailedLoginWindow}. Set it between 00:00:01 and 1.00:00:00 (default 00:15:00).");
        return Result(errors);
    }

    public ValidateOptionsResult Validate(string? name, ServerOptions o)
    {
        var errors = new List<string>();
        if (o.PublicUrl is { } url && (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https")))
            errors.Add($"PublicUrl is '{url}'. Set it to the absolute http(s) URL clients use, e.g. 'https://auth.example.com'.");
        return Result(errors);
    }

    private static ValidateOptionsResult Result(List<string> errors) =>
        errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
}
