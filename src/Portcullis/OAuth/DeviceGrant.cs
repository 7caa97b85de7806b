using System.Buffers.Text;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Serialization;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.OAuth;

/// <summary>A row of <c>device_codes</c>: one login a CLI started (RFC 8628), by the SHA-256 of its device code.</summary>
public sealed class DeviceAuthorization
{
    public const string Pending = "pending";
    public const string Approved = "approved";
    public const string Denied = "denied";

    public required string DeviceCodeHash { get; init; }
    public required string UserCode { get; init; }
    public required string ClientId { get; init; }
    public string? Scope { get; init; }
    public string? DeviceName { get; init; }
    public string? RequestedFrom { get; init; }
    public string? UserAgent { get; init; }
    public DateTime CreatedAt { get; init; }
    public DateTime ExpiresAt { get; init; }
    public int IntervalSeconds { get; set; }
    public DateTime? LastPolledAt { get; set; }
    public required string Status { get; set; }
    public long? DecidedBy { get; set; }
    public DateTime? DecidedAt { get; set; }
    public long? TokenId { get; set; }

    /// <summary>The approved API token, sealed with the key-encryption key until the CLI collects it.</summary>
    public string? SealedToken { get; set; }
}

/// <summary>What <c>POST /auth/device</c> reads, as a form (for the OpenAPI document).</summary>
internal sealed record DeviceAuthorizationRequest(string? ClientId, string? Scope, string? DeviceName);

/// <summary>The token a device login hands over: an API token, with <c>expires_in</c> only when it expires.</summary>
internal sealed record DeviceTokenResponse(string AccessToken, string TokenType,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] int? ExpiresIn, string Scope);

/// <summary>
/// The device authorization grant (RFC 8628; docs/decisions.md, "Logging in from a terminal with a browser"). The CLI asks
/// <c>POST /auth/device</c> for a device code (a 256-bit secret it keeps) and a user code (8 letters a person types); the
/// person opens <c>/device</c> in a browser where they are logged in, checks the code and what asked for it, and chooses
/// what the new API token may do; approving creates that token, which waits here sealed until the CLI, polling
/// <c>/auth/token</c> with its device code, collects it once. Every instance answers every step (the state is in the
/// database), and every step is audited.
/// </summary>
internal sealed class DeviceGrant(IDbContextFactory<PortcullisDb> dbs, KeySealing sealing, AuditLog audit, InvalidationBus invalidation, TimeProvider time,
    IOptions<AuthOptions> options)
{
    public const string GrantType = PortcullisClient.DeviceCodeGrantType;
    public const string VerificationPath = "/device";

    /// <summary>RFC 8628 §6.1: twenty consonants, no vowels (no words), nothing that looks like a digit.</summary>
    public const string UserCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ";
    public const int UserCodeLength = 8;

    /// <summary>How much later than its interval a poll may come without being told to slow down (timers and clocks are not exact).</summary>
    private static readonly TimeSpan PollSlack = TimeSpan.FromMilliseconds(500);

    /// <summary>What a slow_down adds to the interval (RFC 8628 §3.5).</summary>
    private const int SlowDownSeconds = 5;

    private const int MaxDeviceNameLength = 64;
    private const string SealPurpose = "device-token";

    /// <summary><c>POST /auth/device</c>: a new device code and user code for the CLI client.</summary>
    public async Task<IResult> AuthorizeAsync(HttpContext http, string publicUrl)
    {
        http.Response.Headers.CacheControl = "no-store";
        var (parameters, parseError) = await TokenEndpoint.ReadParametersAsync(http.Request);
        if (parameters is null)
            return TokenEndpoint.Error("invalid_request", parseError!);
        var (scope, deviceName, invalid) = ReadRequest(http, parameters);
        if (invalid is not null)
            return invalid;

        var o = options.Value;
        var now = time.GetUtcNow().UtcDateTime;
        var deviceCode = Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(32));
        await PruneAsync(http.RequestAborted);
        await using var db = await dbs.CreateDbContextAsync(http.RequestAborted);
        // Anyone may ask, without a credential: a bound on the codes pending per address keeps that from filling the database.
        var address = http.ClientAddress()?.ToString();
        var pending = await db.DeviceAuthorizations.Where(d => d.RequestedFrom == address && d.ExpiresAt > now && d.Status == DeviceAuthorization.Pending)
            .OrderBy(d => d.ExpiresAt).Select(d => d.ExpiresAt).Take(o.MaxPendingDeviceCodesPerAddress).ToListAsync(http.RequestAborted);
        if (pending.Count >= o.MaxPendingDeviceCodesPerAddress)
        {
            var wait = (int)Math.Ceiling((pending[0] - now).TotalSeconds);
            http.Response.Headers.RetryAfter = wait.ToString(CultureInfo.InvariantCulture);
            return TokenEndpoint.Error("temporarily_unavailable",
                $"{pending.Count} device logins from this address are waiting for approval already. Approve or deny them, or try again in {wait} seconds.",
                StatusCodes.Status429TooManyRequests);
        }
        for (var attempt = 1; ; attempt++)
        {
            // 20^8 ≈ 2^34.6 codes: a collision with a live code is rare, and answered by drawing again.
            var row = new DeviceAuthorization
            {
                DeviceCodeHash = Hash(deviceCode),
                UserCode = NewUserCode(),
                ClientId = FirstPartyClients.Cli,
                Scope = scope,
                DeviceName = deviceName,
                RequestedFrom = address,
                UserAgent = Truncate(http.Request.Headers.UserAgent.ToString(), 200),
                CreatedAt = now,
                ExpiresAt = now + o.DeviceCodeLifetime,
                IntervalSeconds = (int)o.DeviceCodePollInterval.TotalSeconds,
                Status = DeviceAuthorization.Pending,
            };
            db.DeviceAuthorizations.Add(row);
            db.AuditEvents.Add(audit.Create(http, AuditEvents.DeviceAuthorizationStarted, details: new
            {
                client_id = row.ClientId, scope, device_name = row.DeviceName, user_agent = row.UserAgent, expires_at = row.ExpiresAt,
            }));
            try
            {
                await db.SaveChangesAsync(http.RequestAborted);
            }
            catch (DbUpdateException e) when (attempt < 3 && DatabaseFailures.IsUniqueViolation(e))
            {
                db.ChangeTracker.Clear();
                continue;
            }
            var verification = publicUrl + VerificationPath;
            return TypedResults.Json(new DeviceAuthorizationResponse(deviceCode, Display(row.UserCode), verification,
                $"{verification}?user_code={Display(row.UserCode)}", (int)o.DeviceCodeLifetime.TotalSeconds, row.IntervalSeconds));
        }
    }

    /// <summary>
    /// <c>grant_type=urn:ietf:params:oauth:grant-type:device_code</c> at <c>/auth/token</c> (RFC 8628 §3.4, §3.5): pending,
    /// slow down, denied, expired, or the approved API token, handed over once.
    /// </summary>
    public async Task<IResult> PollAsync(HttpContext http, IReadOnlyDictionary<string, string> parameters)
    {
        if (ClientError(http, parameters) is { } clientError)
            return clientError;
        if (parameters.GetValueOrDefault("device_code") is not { } deviceCode)
            return TokenEndpoint.Error("invalid_request", "The device_code grant needs 'device_code', as POST /auth/device gave it.");

        var now = time.GetUtcNow().UtcDateTime;
        var hash = Hash(deviceCode);
        await using var db = await dbs.CreateDbContextAsync(http.RequestAborted);
        var row = await db.DeviceAuthorizations.AsNoTracking().SingleOrDefaultAsync(d => d.DeviceCodeHash == hash, http.RequestAborted);
        if (row is null)
            return UnknownCode;

        // A decision is told even when it came just before the code expired: an approved token is never left behind
        // for want of one more poll (the row lives on twice the code's lifetime after it ends).
        switch (row.Status)
        {
            case DeviceAuthorization.Denied:
                // Said once; the denial itself was audited when the person made it.
                return await db.DeviceAuthorizations.Where(d => d.DeviceCodeHash == hash).ExecuteDeleteAsync(http.RequestAborted) == 1
                    ? TokenEndpoint.Error("access_denied", "The login was denied in the browser.")
                    : UnknownCode;
            case DeviceAuthorization.Approved when row.SealedToken is not null:
                return await CollectAsync(http, db, row, deviceCode);
        }
        if (row.ExpiresAt <= now)
            return TokenEndpoint.Error("expired_token", "The code expired before it was approved. Start the login again (portcullis login --web).");

        // Too quick: the interval grows for this and every later poll (§3.5). Two polls racing on two instances may both
        // pass; the interval is advice to a well-behaved client, not a guard (a device code cannot be guessed). Written
        // only if the row is still there: another poll may have collected it a moment ago.
        var tooSoon = row.LastPolledAt is { } last && now < last + TimeSpan.FromSeconds(row.IntervalSeconds) - PollSlack;
        var interval = row.IntervalSeconds + (tooSoon ? SlowDownSeconds : 0);
        var polled = await db.DeviceAuthorizations.Where(d => d.DeviceCodeHash == hash)
            .ExecuteUpdateAsync(set => set.SetProperty(d => d.IntervalSeconds, interval).SetProperty(d => d.LastPolledAt, now), http.RequestAborted);
        if (polled == 0)
            return UnknownCode;
        return tooSoon
            ? TokenEndpoint.Error("slow_down", $"Polling too often: wait at least {interval} seconds between requests.")
            : TokenEndpoint.Error("authorization_pending", $"Waiting for a person to approve the code at {VerificationPath}.");
    }

    /// <summary>
    /// Forgets the logins whose answer nobody can need any more (twice the code's lifetime after it ended), at each new
    /// login and in the periodic housekeeping. A token approved for one of them and never collected is held by nobody, so
    /// it is revoked: it ends with the login that made it. Deleted with <c>RETURNING</c>, so a token handed over at the
    /// same moment on another instance is never the one revoked.
    /// </summary>
    public async Task PruneAsync(CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcDateTime;
        var forgotten = now - 2 * options.Value.DeviceCodeLifetime;
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        var pruned = await db.DeviceAuthorizations.FromSql($"DELETE FROM device_codes WHERE expires_at < {forgotten} RETURNING *")
            .AsNoTracking().ToListAsync(cancellationToken);
        var stranded = pruned.Where(d => d.TokenId is not null).Select(d => d.TokenId!.Value).ToList();
        if (stranded.Count == 0)
            return;
        var tokens = await db.ApiTokens.Where(t => stranded.Contains(t.Id) && (t.RevokedAt == null || t.RevokedAt > now)).ToListAsync(cancellationToken);
        foreach (var token in tokens)
        {
            token.RevokedAt = now;
            db.AuditEvents.Add(audit.Create(null, AuditEvents.TokenRevoked, subjectId: token.OwnerId, tokenId: token.Id.ToString(CultureInfo.InvariantCulture),
                details: new { name = token.Name, hint = token.Hint, reason = "approved for a device login that never collected it" }));
        }
        await db.SaveChangesAsync(cancellationToken);
        foreach (var token in tokens)
            await invalidation.TokenChangedAsync(token.TokenHash, cancellationToken);
    }

    /// <summary>Hands the approved token over, once: of two polls (on any instances), one deletes the row and gets it.</summary>
    private async Task<IResult> CollectAsync(HttpContext http, PortcullisDb db, DeviceAuthorization row, string deviceCode)
    {
        var hash = row.DeviceCodeHash;
        var collected = (await db.DeviceAuthorizations
            .FromSql($"DELETE FROM device_codes WHERE device_code_hash = {hash} AND status = {DeviceAuthorization.Approved} RETURNING *")
            .AsNoTracking().ToListAsync(http.RequestAborted)).SingleOrDefault();
        if (collected?.SealedToken is not { } stored)
            return TokenEndpoint.Error("invalid_grant", "This device code was used already. Start the login again.");
        if (sealing.Unseal(stored, SealPurpose, hash) is not { } plaintext)
            return TokenEndpoint.Error("invalid_grant", "The approved token cannot be read on this server (its key-encryption key changed). Start the login again.");

        var token = await db.ApiTokens.AsNoTracking().SingleOrDefaultAsync(t => t.Id == collected.TokenId, http.RequestAborted);
        var now = time.GetUtcNow().UtcDateTime;
        if (token is null || token.RevokedAt <= now || token.ExpiresAt <= now)
            return TokenEndpoint.Error("invalid_grant", "The approved token was revoked before it was collected. Start the login again.");
        await audit.EnqueueAsync(audit.Create(http, AuditEvents.DeviceTokenCollected, subjectId: token.OwnerId,
            tokenId: token.Id.ToString(CultureInfo.InvariantCulture), details: new { name = token.Name, hint = token.Hint, client_id = collected.ClientId }),
            http.RequestAborted);
        var expiresIn = token.ExpiresAt is { } expires ? (int?)Math.Max(1, (int)(expires - now).TotalSeconds) : null;
        return TypedResults.Json(new DeviceTokenResponse(Encoding.UTF8.GetString(plaintext), "Bearer", expiresIn, token.Scopes));
    }

    /// <summary>What a device authorization request asks for: a scope and the machine's name, both optional; or why it is refused.</summary>
    private static (string? Scope, string? DeviceName, IResult? Error) ReadRequest(HttpContext http, IReadOnlyDictionary<string, string> parameters)
    {
        if (ClientError(http, parameters) is { } clientError)
            return (null, null, clientError);
        string? scope = null;
        if (parameters.GetValueOrDefault("scope") is { } requested)
        {
            if (!ScopeSet.TryParse(requested.Split(' ', StringSplitOptions.RemoveEmptyEntries), out var parsed, out var scopeError))
                return (null, null, TokenEndpoint.Error("invalid_scope", scopeError!));
            scope = parsed.ToString();
        }
        var deviceName = parameters.GetValueOrDefault("device_name")?.Trim();
        // Control and format characters (bidirectional overrides among them) could make the name read otherwise on the page.
        if (deviceName is { Length: > MaxDeviceNameLength } || deviceName?.Any(c => char.IsControl(c) || char.GetUnicodeCategory(c) == UnicodeCategory.Format) == true)
            return (null, null, TokenEndpoint.Error("invalid_request", $"device_name must be at most {MaxDeviceNameLength} printable characters (the machine's host name)."));
        return (scope, string.IsNullOrEmpty(deviceName) ? null : deviceName, null);
    }

    private static IResult UnknownCode => TokenEndpoint.Error("invalid_grant",
        "This device code is unknown: it was used already, denied, or never issued. Start the login again.");

    /// <summary>The login a person typed the code of, whatever its state (pending, decided, expired); null when no login has it.</summary>
    public async Task<DeviceAuthorization?> FindAsync(string userCode, CancellationToken cancellationToken)
    {
        if (Normalize(userCode) is not { } code)
            return null;
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        return await db.DeviceAuthorizations.AsNoTracking().SingleOrDefaultAsync(d => d.UserCode == code, cancellationToken);
    }

    /// <summary>Whether a login still waits for a decision.</summary>
    public bool IsPending(DeviceAuthorization login) => login.Status == DeviceAuthorization.Pending && login.ExpiresAt > time.GetUtcNow().UtcDateTime;

    /// <summary>
    /// Takes the decision on a pending login for <paramref name="person"/>, atomically: of two decisions (two tabs, two
    /// instances), one wins. False when the code is not pending any more.
    /// </summary>
    public async Task<bool> DecideAsync(string userCode, string status, Credential person, CancellationToken cancellationToken)
    {
        if (Normalize(userCode) is not { } code)
            return false;
        var now = time.GetUtcNow().UtcDateTime;
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        return await db.DeviceAuthorizations
            .Where(d => d.UserCode == code && d.Status == DeviceAuthorization.Pending && d.ExpiresAt > now)
            .ExecuteUpdateAsync(set => set.SetProperty(d => d.Status, status).SetProperty(d => d.DecidedBy, person.Owner.Id).SetProperty(d => d.DecidedAt, now),
                cancellationToken) == 1;
    }

    /// <summary>An approval whose token could not be made (a rule of the form): the login is pending again.</summary>
    public async Task UndoApprovalAsync(string userCode, CancellationToken cancellationToken)
    {
        var code = Normalize(userCode);
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        await db.DeviceAuthorizations.Where(d => d.UserCode == code && d.Status == DeviceAuthorization.Approved && d.SealedToken == null)
            .ExecuteUpdateAsync(set => set.SetProperty(d => d.Status, DeviceAuthorization.Pending).SetProperty(d => d.DecidedBy, (long?)null)
                .SetProperty(d => d.DecidedAt, (DateTime?)null), cancellationToken);
    }

    /// <summary>Leaves the approved token for the CLI, sealed so that a copy of the database does not hold it in clear.</summary>
    public async Task HandOverAsync(DeviceAuthorization login, long tokenId, string token, CancellationToken cancellationToken)
    {
        var sealedToken = sealing.Seal(Encoding.UTF8.GetBytes(token), SealPurpose, login.DeviceCodeHash);
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        await db.DeviceAuthorizations.Where(d => d.DeviceCodeHash == login.DeviceCodeHash && d.Status == DeviceAuthorization.Approved)
            .ExecuteUpdateAsync(set => set.SetProperty(d => d.TokenId, tokenId).SetProperty(d => d.SealedToken, sealedToken), cancellationToken);
    }

    /// <summary>
    /// Only Portcullis's own public CLI client uses this grant (docs/decisions.md), named by <c>client_id</c> alone: client
    /// credentials are refused rather than ignored, since the client has none.
    /// </summary>
    private static IResult? ClientError(HttpContext http, IReadOnlyDictionary<string, string> parameters)
    {
        if (parameters.ContainsKey("client_secret") || http.Request.Headers.Authorization.Count > 0)
            return TokenEndpoint.Error("invalid_request", $"The device grant is for the public client '{FirstPartyClients.Cli}', which has no secret: send only client_id.");
        return parameters.GetValueOrDefault("client_id") switch
        {
            null => TokenEndpoint.Error("invalid_request", $"The device grant needs client_id={FirstPartyClients.Cli}."),
            FirstPartyClients.Cli => null,
            FirstPartyClients.Portcullis => TokenEndpoint.Error("unauthorized_client", $"The client '{FirstPartyClients.Portcullis}' may not use the device grant; the CLI's client is '{FirstPartyClients.Cli}'."),
            // 400 rather than 401: no client authentication was attempted (RFC 6749 §5.2).
            _ => TokenEndpoint.Error("invalid_client", $"The device grant is only for the client '{FirstPartyClients.Cli}'."),
        };
    }

    private static string NewUserCode() => string.Create(UserCodeLength, 0, static (chars, _) =>
    {
        for (var i = 0; i < chars.Length; i++)
            chars[i] = UserCodeAlphabet[RandomNumberGenerator.GetInt32(UserCodeAlphabet.Length)];
    });

    /// <summary>A user code as people type it (any case, with or without the dash or spaces) as stored; null if it cannot be one.</summary>
    public static string? Normalize(string? typed)
    {
        if (typed is null || typed.Length > 2 * UserCodeLength)
            return null;
        var code = new StringBuilder(UserCodeLength);
        foreach (var c in typed)
        {
            if (c is '-' or ' ')
                continue;
            var upper = char.ToUpperInvariant(c);
            if (!UserCodeAlphabet.Contains(upper) || code.Length == UserCodeLength)
                return null;
            code.Append(upper);
        }
        return code.Length == UserCodeLength ? code.ToString() : null;
    }

    /// <summary>A user code as shown: two groups of four, <c>WDJB-MJHT</c>.</summary>
    public static string Display(string code) => code.Length == UserCodeLength ? code[..4] + "-" + code[4..] : code;

    private static string Hash(string secret) => TokenFormat.Digest(secret).ToHex();

    private static string? Truncate(string s, int length) => s.Length == 0 ? null : s.Length <= length ? s : s[..length];
}
