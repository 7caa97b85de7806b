using System.Globalization;
using System.Net;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Data;
using Portcullis.OAuth;
using Portcullis.Security;
using Portcullis.Tokens;

namespace Portcullis.Auth;

internal enum VerifyFailure : byte
{
    None,
    Malformed,
    Unknown,
    Expired,
    Revoked,
    OwnerDisabled,

    /// <summary>The token was used as many times as its use limit allows.</summary>
    Spent,

    /// <summary>The token was presented from an address outside its allowed ranges.</summary>
    DeniedSource,

    /// <summary>The token was used faster than its rate limit allows (<see cref="VerifyResult.Throttled"/> says which).</summary>
    RateLimited,

    /// <summary>The decision needs the database and the database did not answer: fail closed (503).</summary>
    Unavailable,
}

internal readonly record struct VerifyResult(Credential? Credential, VerifyFailure Failure, RateLimitRefusal? Throttled = null)
{
    public static VerifyResult Fail(VerifyFailure failure) => new(null, failure);
}

/// <summary>
/// Turns a presented secret (API token, service token or JWT) into a <see cref="Credential"/>.
/// The common case — a cached API token — is answered from memory: parse and checksum, SHA-256,
/// one dictionary lookup for the token, one for its owner, and two comparisons (docs/decisions.md).
/// </summary>
internal sealed partial class CredentialVerifier(
    TokenFormat format,
    TokenCache cache,
    PrincipalCache principals,
    UsageRecorder usage,
    TokenRateLimiter rateLimiter,
    JwtService jwts,
    RevokedJwts revokedJwts,
    ClientCache clients,
    AuditLog audit,
    IDbContextFactory<PortcullisDb> dbs,
    TimeProvider time,
    IOptions<ServicePrincipals.ServicesOptions> services,
    ILogger<CredentialVerifier> logger)
{
    /// <summary>
    /// Whether configured services use pre-shared tokens that are not in Portcullis's format (docs/services.md): only then
    /// is a secret in another format looked up at all.
    /// </summary>
    public bool AcceptsPresharedTokens { get; } = services.Value.Services.Any(s => s.ApiToken is { } token && !format.HasPrefix(token));

    /// <summary>
    /// The allocation-free part of verification. Returns true with a failure of <see cref="VerifyFailure.None"/>
    /// when the token is valid and fully answered from the cache; false when the cache cannot decide.
    /// </summary>
    public bool TryVerifyCached(ReadOnlySpan<char> token, long nowTicks, out CachedToken? entry, out PrincipalState? owner, out VerifyFailure failure)
    {
        owner = null;
        entry = null;
        if (format.HasPrefix(token))
        {
            if (!format.TryRead(token, out _))
            {
                failure = VerifyFailure.Malformed;
                return true;
            }
        }
        else if (!AcceptsPresharedTokens || token.Length < 32)
        {
            failure = VerifyFailure.Malformed;
            return true;
        }
        var digest = TokenFormat.Digest(token);
        if (!cache.TryGet(digest, nowTicks, out var cached))
        {
            failure = VerifyFailure.None;
            return false;
        }
        entry = cached;
        return Evaluate(cached, nowTicks, out owner, out failure);
    }

    private bool Evaluate(CachedToken entry, long nowTicks, out PrincipalState? owner, out VerifyFailure failure)
    {
        owner = null;
        if (!entry.IsKnown)
        {
            failure = VerifyFailure.Unknown;
            return true;
        }
        if (nowTicks >= entry.ValidUntilTicks)
        {
            failure = entry.EndsByRevocation ? VerifyFailure.Revoked : VerifyFailure.Expired;
            return true;
        }
        owner = principals.TryGet(entry.OwnerId, nowTicks);
        if (owner is null)
        {
            failure = VerifyFailure.None;
            return false;
        }
        failure = owner.IsDisabled ? VerifyFailure.OwnerDisabled : VerifyFailure.None;
        return true;
    }

    public ValueTask<VerifyResult> VerifyAsync(string token, IPAddress? address, CancellationToken cancellationToken) =>
        VerifyAsync(token, address, recordUse: true, cancellationToken);

    /// <summary>
    /// Verifies a credential on someone else's behalf (introspection): the same decision, but it is
    /// not counted as a use of the token, nor reported as a use after revocation.
    /// </summary>
    public ValueTask<VerifyResult> InspectAsync(string token, CancellationToken cancellationToken) =>
        VerifyAsync(token, null, recordUse: false, cancellationToken);

    private async ValueTask<VerifyResult> VerifyAsync(string token, IPAddress? address, bool recordUse, CancellationToken cancellationToken)
    {
        if (JwtService.LooksLikeJwt(token) && !format.HasPrefix(token))
            return await VerifyJwtAsync(token, cancellationToken);

        var now = time.GetUtcNow().UtcTicks;
        try
        {
            if (!TryVerifyCached(token, now, out var entry, out var owner, out var failure))
            {
                // Either the token or its owner was not in the cache.
                entry ??= await LoadAsync(token, now, cancellationToken);
                Evaluate(entry, now, out owner, out failure);
                if (failure == VerifyFailure.None && owner is null)
                {
                    owner = await principals.GetAsync(entry.OwnerId, cancellationToken);
                    failure = owner is null ? VerifyFailure.Unknown : owner.IsDisabled ? VerifyFailure.OwnerDisabled : VerifyFailure.None;
                }
            }
            if (failure != VerifyFailure.None)
            {
                if (failure == VerifyFailure.Revoked && recordUse)
                    ReportUsedAfterRevoke(entry!, address);
                return VerifyResult.Fail(failure);
            }
            // Where it is used from matters only to a use: an inspection reports the ranges instead (introspection), and
            // an open connection's re-check has passed this check when it started.
            if (entry!.AllowedNetworks is { } networks && recordUse && !AllowedSources.Allows(networks, address))
            {
                await ReportDeniedSourceAsync(entry, address, cancellationToken);
                return VerifyResult.Fail(VerifyFailure.DeniedSource);
            }
            // Over its rate limit: refused before it could count as one of its uses.
            if (entry.RateLimit is not null && recordUse && rateLimiter.TryAcquire(entry) is { } refusal)
                return new VerifyResult(null, VerifyFailure.RateLimited, refusal);
            if (entry.MaxUses is not null && !await CountUseAsync(entry.TokenId, recordUse, cancellationToken))
                return VerifyResult.Fail(VerifyFailure.Spent);
            if (recordUse)
                usage.Record(entry.TokenId, address, now);
            var kind = owner!.IsService ? CredentialKinds.Service : CredentialKinds.ApiToken;
            return new VerifyResult(new Credential(kind, entry.TokenIdText, owner, entry.Scopes) { AllowedNetworks = entry.AllowedNetworks, RateLimit = entry.RateLimit }, VerifyFailure.None);
        }
        catch (Exception e) when (DatabaseFailures.IsDatabaseFailure(e))
        {
            Log.CannotVerify(logger, e.Message);
            return VerifyResult.Fail(VerifyFailure.Unavailable);
        }
    }

    /// <summary>
    /// A use of a token with a use limit, counted in the database in the statement that checks the limit, so that no
    /// number of concurrent requests on any number of instances gets more uses than the limit (docs/token-policies.md).
    /// Inspecting (introspection, the re-check of open connections) only reads whether a use is left.
    /// </summary>
    private async Task<bool> CountUseAsync(long tokenId, bool use, CancellationToken cancellationToken)
    {
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        var left = db.ApiTokens.Where(t => t.Id == tokenId && t.Uses < t.MaxUses);
        return use
            ? await left.ExecuteUpdateAsync(set => set.SetProperty(t => t.Uses, t => t.Uses + 1), cancellationToken) == 1
            : await left.AnyAsync(cancellationToken);
    }

    private async Task<CachedToken> LoadAsync(string token, long nowTicks, CancellationToken cancellationToken)
    {
        var digest = TokenFormat.Digest(token);
        var generation = cache.Generation;
        if (!cache.MayExist(digest))
        {
            // Not a token of ours, and the budget for checking such digests is spent: a flood of random tokens.
            // Not cached either: random tokens never repeat, and storing them would only churn the negative entries.
            return CachedToken.Unknown(nowTicks);
        }
        var hex = digest.ToHex();
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        var row = await db.ApiTokens.AsNoTracking()
            .Where(t => t.TokenHash == hex)
            .Select(t => new { t.Id, t.OwnerId, t.Scopes, t.Hint, t.ExpiresAt, t.RevokedAt, t.MaxUses, t.AllowedCidrs, t.RatePerSecond, t.RatePerMinute, t.RateBucket })
            .FirstOrDefaultAsync(cancellationToken);
        CachedToken entry;
        if (row is null)
        {
            entry = CachedToken.Unknown(nowTicks);
        }
        else
        {
            // Missed while notifications were down, or made by another instance a moment ago: known from now on.
            cache.Created(digest);
            var expires = row.ExpiresAt?.Ticks ?? long.MaxValue;
            var revoked = row.RevokedAt?.Ticks ?? long.MaxValue;
            entry = new CachedToken
            {
                TokenId = row.Id,
                TokenIdText = row.Id.ToString(CultureInfo.InvariantCulture),
                OwnerId = row.OwnerId,
                Scopes = ScopeSet.Parse(row.Scopes),
                Hint = row.Hint,
                ValidUntilTicks = Math.Min(expires, revoked),
                EndsByRevocation = revoked <= expires,
                LoadedAtTicks = nowTicks,
                MaxUses = row.MaxUses,
                AllowedNetworks = AllowedSources.FromStored(row.AllowedCidrs),
                RateLimit = row.RatePerSecond is null && row.RatePerMinute is null ? null : new TokenRateLimit(row.RatePerSecond, row.RatePerMinute),
                RateBucket = row.RateBucket ?? row.Id,
            };
        }
        await cache.BeforeStoreAsync(cancellationToken);
        cache.Store(digest, entry, generation);
        return entry;
    }

    private async ValueTask<VerifyResult> VerifyJwtAsync(string token, CancellationToken cancellationToken)
    {
        var claims = await jwts.ValidateAsync(token, cancellationToken);
        if (claims is null)
            return VerifyResult.Fail(VerifyFailure.Unknown);
        // Revoked through /auth/revoke: the deny-list is in memory, complete for unexpired JWTs.
        if (revokedJwts.IsRevoked(claims.Jti))
            return VerifyResult.Fail(VerifyFailure.Revoked);
        try
        {
            // A client's own token (client credentials: the client is the subject); a person's token names a client too.
            if (claims.ClientId is not null && !FirstPartyClients.Contains(claims.ClientId) && claims.Subject == claims.ClientId)
                return await VerifyClientJwtAsync(claims, cancellationToken);
            var owner = await principals.GetByNameAsync(claims.Subject, cancellationToken);
            if (owner is null)
                return VerifyResult.Fail(VerifyFailure.Unknown);
            if (owner.IsDisabled)
                return VerifyResult.Fail(VerifyFailure.OwnerDisabled);
            // Issued to an earlier principal of the same name, since deleted.
            if (claims.PrincipalId != owner.Id)
                return VerifyResult.Fail(VerifyFailure.Revoked);
            // The password changed or the user was disabled after this token was issued.
            if (claims.CredentialVersion is { } v && v != owner.CredentialVersion)
                return VerifyResult.Fail(VerifyFailure.Revoked);
            return new VerifyResult(new Credential(CredentialKinds.Jwt, claims.Jti, owner, claims.Scopes, claims.ClientId, claims), VerifyFailure.None);
        }
        catch (Exception e) when (DatabaseFailures.IsDatabaseFailure(e))
        {
            Log.CannotVerifyJwt(logger, e.Message);
            return VerifyResult.Fail(VerifyFailure.Unavailable);
        }
    }

    /// <summary>
    /// A client-credentials JWT (<c>sub</c> = <c>client_id</c>) lives only as long as its client and
    /// the secret it was issued for: deleting the client or rotating (or revoking) its secret ends
    /// it at once. It acts for the client's owner, so a disabled owner stops it too, and for good: the owner's
    /// credential version at issue is in the token, and disabling the owner moves it on (re-enabling does not
    /// bring the token back, as with the owner's own JWTs and sessions).
    /// </summary>
    private async ValueTask<VerifyResult> VerifyClientJwtAsync(JwtClaims claims, CancellationToken cancellationToken)
    {
        if (!string.Equals(claims.Subject, claims.ClientId, StringComparison.Ordinal))
            return VerifyResult.Fail(VerifyFailure.Unknown);
        var client = await clients.GetAsync(claims.ClientId!, cancellationToken);
        if (!client.IsKnown || client.OwnerId != claims.PrincipalId || client.SecretVersion != claims.CredentialVersion)
            return VerifyResult.Fail(VerifyFailure.Revoked);
        var owner = await principals.GetAsync(client.OwnerId, cancellationToken);
        if (owner is null)
            return VerifyResult.Fail(VerifyFailure.Unknown);
        if (owner.IsDisabled)
            return VerifyResult.Fail(VerifyFailure.OwnerDisabled);
        if (claims.OwnerVersion != owner.CredentialVersion)
            return VerifyResult.Fail(VerifyFailure.Revoked);
        return new VerifyResult(new Credential(CredentialKinds.Jwt, claims.Jti, owner, claims.Scopes, claims.ClientId, claims), VerifyFailure.None);
    }

    /// <summary>
    /// Audits the use of a revoked token, at most once a minute per token: a leaked token being tried is news. Raised
    /// where nothing can wait, it goes to the audit queue's reserve.
    /// </summary>
    private void ReportUsedAfterRevoke(CachedToken entry, IPAddress? address)
    {
        if (!Due((AuditEvents.TokenUsedAfterRevoke, entry.TokenId, null)))
            return;
        var e = audit.Create(null, AuditEvents.TokenUsedAfterRevoke, subjectId: entry.OwnerId, tokenId: entry.TokenIdText, details: new { hint = entry.Hint });
        e.ClientIp = address?.ToString();
        audit.EnqueueReserved(e);
    }

    /// <summary>
    /// Audits a token presented from outside its allowed ranges, at most once a minute per token and client address (an
    /// IPv6 client per /64, the block one subscriber holds); the refused request waits for room in the audit queue like
    /// other denials.
    /// </summary>
    private ValueTask ReportDeniedSourceAsync(CachedToken entry, IPAddress? address, CancellationToken cancellationToken)
    {
        var from = address?.ToString();
        if (!Due((AuditEvents.TokenDeniedSource, entry.TokenId, LoginThrottle.AddressSubject(address))))
            return ValueTask.CompletedTask;
        var e = audit.Create(null, AuditEvents.TokenDeniedSource, subjectId: entry.OwnerId, tokenId: entry.TokenIdText, details: new { hint = entry.Hint, address = from });
        e.ClientIp = from;
        return audit.EnqueueAsync(e, cancellationToken);
    }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<(string Event, long TokenId, string? Address), long> _lastReports = new();

    /// <summary>Whether an event about a token is due: not reported in the last minute.</summary>
    private bool Due((string Event, long TokenId, string? Address) key)
    {
        var now = time.GetUtcNow().UtcTicks;
        if (now - _lastReports.GetValueOrDefault(key) < TimeSpan.TicksPerMinute)
            return false;
        // Bounded without ever going quiet: past 100,000 keys, those reported over a minute ago are forgotten.
        if (_lastReports.Count > 100_000)
        {
            foreach (var (old, at) in _lastReports)
            {
                if (now - at >= TimeSpan.TicksPerMinute)
                    _lastReports.TryRemove(old, out _);
            }
        }
        _lastReports[key] = now;
        return true;
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Cannot verify a credential: the database did not answer ({Error})")]
        public static partial void CannotVerify(ILogger logger, string error);

        [LoggerMessage(2, LogLevel.Warning, "Cannot verify a JWT: the database did not answer ({Error})")]
        public static partial void CannotVerifyJwt(ILogger logger, string error);
    }
}
