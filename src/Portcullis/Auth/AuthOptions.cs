using Microsoft.Extensions.Options;

namespace Portcullis.Auth;

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

    /// <summary>Whether <c>/auth/token</c> accepts username and password.</summary>
    public bool PasswordGrant { get; set; } = true;

    /// <summary>
    /// Whether the web UI's login page offers the password form; false leaves only the OpenID Providers of <c>Auth:Oidc</c>
    /// (docs/single-sign-on.md). The API's password grant is <see cref="PasswordGrant"/>.
    /// </summary>
    public bool LocalLogin { get; set; } = true;

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

    /// <summary>How long a device login (<c>portcullis login --web</c>) waits for its approval: the <c>expires_in</c> of RFC 8628.</summary>
    public TimeSpan DeviceCodeLifetime { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>How often the CLI polls for the approval at first (whole seconds): the <c>interval</c> of RFC 8628.</summary>
    public TimeSpan DeviceCodePollInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Device logins that may wait for approval at once per client address; <c>POST /auth/device</c> needs no credential.</summary>
    public int MaxPendingDeviceCodesPerAddress { get; set; } = 20;
}

/// <summary>Checks these settings at start; every problem names the key and the fix (docs/configuration.md).</summary>
internal sealed class AuthOptionsValidator : IValidateOptions<JwtOptions>, IValidateOptions<AuthOptions>
{
    public ValidateOptionsResult Validate(string? name, JwtOptions o)
    {
        var errors = new List<string>();
        if (o.AccessTokenLifetime < TimeSpan.FromMinutes(1) || o.AccessTokenLifetime > TimeSpan.FromDays(1))
            errors.Add($"Jwt:AccessTokenLifetime is {o.AccessTokenLifetime}. Set it between 00:01:00 and 1.00:00:00 (default 01:00:00).");
        if (o.CliTokenLifetime < TimeSpan.FromMinutes(1) || o.CliTokenLifetime > TimeSpan.FromDays(90))
            errors.Add($"Jwt:CliTokenLifetime is {o.CliTokenLifetime}. Set it between 00:01:00 and 90.00:00:00 (default 7.00:00:00).");
        if (string.IsNullOrWhiteSpace(o.Audience))
            errors.Add("Jwt:Audience must not be empty (default 'portcullis').");
        if (!SigningKeys.Algorithms.Contains(o.SigningAlgorithm))
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
        if (o.DeviceCodeLifetime < TimeSpan.FromSeconds(1) || o.DeviceCodeLifetime > TimeSpan.FromHours(1))
            errors.Add($"Auth:DeviceCodeLifetime is {o.DeviceCodeLifetime}. Set it between 00:00:01 and 01:00:00 (default 00:10:00).");
        if (o.DeviceCodePollInterval < TimeSpan.FromSeconds(1) || o.DeviceCodePollInterval > TimeSpan.FromMinutes(1) || o.DeviceCodePollInterval.Ticks % TimeSpan.TicksPerSecond != 0)
            errors.Add($"Auth:DeviceCodePollInterval is {o.DeviceCodePollInterval}. Set it to whole seconds between 00:00:01 and 00:01:00 (default 00:00:05).");
        if (o.MaxPendingDeviceCodesPerAddress is < 1 or > 10_000)
            errors.Add($"Auth:MaxPendingDeviceCodesPerAddress is {o.MaxPendingDeviceCodesPerAddress}. Set it between 1 and 10000 (default 20).");
        return Result(errors);
    }

    private static ValidateOptionsResult Result(List<string> errors) =>
        errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
}
