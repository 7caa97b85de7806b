using System.Buffers.Text;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Tokens;
using Portcullis.Users;

namespace Portcullis.Auth;

/// <summary>
/// Web UI sessions, kept on the server: the cookie holds 256 random bits, the database only their
/// SHA-256. A session acts with its user's current rights (docs/decisions.md) and ends at logout, at expiry
/// (<c>Web:SessionLifetime</c>), or when the user is disabled or changes password. Checked from memory
/// like API tokens; a logout reaches every instance's cache through <see cref="InvalidationBus"/>.
/// </summary>
internal sealed class SessionStore(IDbContextFactory<PortcullisDb> dbs, PrincipalCache principals, TimeProvider time, IOptions<WebOptions> options, IOptions<TokenOptions> tokenOptions,
    CacheStoreDelay storeDelay)
{
    private sealed record Entry(long UserId, int CredentialVersion, DateTime ExpiresAt, bool Known, long LoadedAtTicks, string? Service, TokenDigest? Parent);

    private readonly BoundedCache<TokenDigest, Entry> _cache = new(Capacity, Capacity);
    private readonly long _maxAgeTicks = tokenOptions.Value.CacheMaxAge.Ticks;
    private const int Capacity = 100_000;

    /// <summary>256 bits, base64url: 43 characters.</summary>
    public const int IdLength = 43;


    /// <summary>
    /// Whether cookies must be <c>Secure</c> and <c>__Host-</c>: the request came over HTTPS, directly or through a
    /// trusted proxy that terminates TLS and says so with <c>X-Forwarded-Proto: https</c>.
    /// </summary>
    public static bool IsSecure(HttpContext http) => http.Request.IsHttps;

    public static TokenDigest Digest(string id) => TokenFormat.Digest(id);

    public async Task<(string Id, DateTime ExpiresAt)> CreateAsync(User user, HttpContext http, CancellationToken cancellationToken)
    {
        var expires = time.GetUtcNow().UtcDateTime + options.Value.SessionLifetime;
        var id = await InsertAsync(user.Id, user.CredentialVersion, expires, service: null, parent: null, http, cancellationToken);
        return (id, expires);
    }

    /// <summary>Stores a new session (its digest only) and returns its id, the cookie's value.</summary>
    private async Task<string> InsertAsync(long userId, int credentialVersion, DateTime expires, string? service, TokenDigest? parent, HttpContext http,
        CancellationToken cancellationToken)
    {
        var id = Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(32));
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        var userAgent = http.Request.Headers.UserAgent.ToString();
        db.Sessions.Add(new StoredSession
        {
            IdHash = Digest(id).ToHex(),
            UserId = userId,
            CredentialVersion = credentialVersion,
            CreatedAt = time.GetUtcNow().UtcDateTime,
            ExpiresAt = expires,
            ClientIp = http.ClientAddress()?.ToString(),
            UserAgent = userAgent.Length > 200 ? userAgent[..200] : userAgent,
            Service = service,
            ParentHash = parent?.ToHex(),
        });
        await db.SaveChangesAsync(cancellationToken);
        return id;
    }

    /// <summary>A web session of the UI origin (never one of a service origin).</summary>
    public ValueTask<VerifyResult> VerifyAsync(string id, CancellationToken cancellationToken) => VerifyAsync(id, service: null, cancellationToken);

    /// <summary>
    /// A session: of the UI origin when <paramref name="service"/> is null, else of that service's own origin,
    /// which is valid only while its parent web session is.
    /// </summary>
    public async ValueTask<VerifyResult> VerifyAsync(string id, string? service, CancellationToken cancellationToken)
    {
        if (id.Length != IdLength || !Base64Url.IsValid(id))
            return VerifyResult.Fail(VerifyFailure.Malformed);
        return (await VerifyDigestAsync(Digest(id), service, cancellationToken)).Result;
    }

    private async ValueTask<(VerifyResult Result, Entry? Entry)> VerifyDigestAsync(TokenDigest digest, string? service, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow();
        try
        {
            if (!_cache.TryGet(digest, out var entry) || now.UtcTicks - entry.LoadedAtTicks >= _maxAgeTicks)
            {
                // A logout that lands while this read is under way wins: the read is not kept.
                var generation = _cache.Generation;
                entry = await LoadAsync(digest, now.UtcTicks, cancellationToken);
                await storeDelay.BeforeStoreAsync(CacheStoreDelay.Sessions, cancellationToken);
                _cache.Store(digest, entry, generation, negative: !entry.Known);
            }
            if (!entry.Known || !string.Equals(entry.Service, service, StringComparison.Ordinal))
                return (VerifyResult.Fail(VerifyFailure.Unknown), null);
            if (now.UtcDateTime >= entry.ExpiresAt)
                return (VerifyResult.Fail(VerifyFailure.Expired), null);
            // A service origin's session lives exactly as long as the web session it came from.
            if (entry.Parent is { } parent && (await VerifyDigestAsync(parent, null, cancellationToken)).Result.Credential is null)
                return (VerifyResult.Fail(VerifyFailure.Revoked), null);
            var owner = await principals.GetAsync(entry.UserId, cancellationToken);
            if (owner is null)
                return (VerifyResult.Fail(VerifyFailure.Unknown), null);
            if (owner.IsDisabled)
                return (VerifyResult.Fail(VerifyFailure.OwnerDisabled), null);
            if (owner.CredentialVersion != entry.CredentialVersion)
                return (VerifyResult.Fail(VerifyFailure.Revoked), null);
            return (new VerifyResult(new Credential(CredentialKinds.Session, null, owner, owner.Rights), VerifyFailure.None), entry);
        }
        catch (Exception e) when (DatabaseFailures.IsDatabaseFailure(e))
        {
            return (VerifyResult.Fail(VerifyFailure.Unavailable), null);
        }
    }

    /// <summary>
    /// Opens a session on a service's own origin for the person of a web session (given by its digest), if
    /// that session is still valid: it names the service, ends with its parent, and never outlives it.
    /// </summary>
    public async Task<(string Id, Credential Credential)?> CreateForServiceAsync(TokenDigest parent, string service, HttpContext http, CancellationToken cancellationToken)
    {
        var (result, entry) = await VerifyDigestAsync(parent, null, cancellationToken);
        if (result.Credential is not { } credential || entry is null)
            return null;
        var id = await InsertAsync(entry.UserId, entry.CredentialVersion, entry.ExpiresAt, service, parent, http, cancellationToken);
        return (id, credential);
    }

    private async Task<Entry> LoadAsync(TokenDigest digest, long nowTicks, CancellationToken cancellationToken)
    {
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        var hash = digest.ToHex();
        var row = await db.Sessions.AsNoTracking().Where(s => s.IdHash == hash && s.RevokedAt == null)
            .Select(s => new { s.UserId, s.CredentialVersion, s.ExpiresAt, s.Service, s.ParentHash })
            .FirstOrDefaultAsync(cancellationToken);
        return row is null
            ? new Entry(0, 0, DateTime.MinValue, false, nowTicks, null, null)
            : new Entry(row.UserId, row.CredentialVersion, row.ExpiresAt, true, nowTicks, row.Service, row.ParentHash is null ? null : TokenDigest.FromHex(row.ParentHash));
    }

    /// <summary>Ends a session on the server: it fails on every instance from now on.</summary>
    public async Task RevokeAsync(string id, InvalidationBus bus, CancellationToken cancellationToken)
    {
        if (id.Length != IdLength)
            return;
        var digest = Digest(id);
        await using (var db = await dbs.CreateDbContextAsync(cancellationToken))
        {
            // The sessions it opened on service origins end with it (they also check it on every request).
            var (hash, now) = (digest.ToHex(), time.GetUtcNow().UtcDateTime);
            await db.Sessions.Where(s => (s.IdHash == hash || s.ParentHash == hash) && s.RevokedAt == null)
                .ExecuteUpdateAsync(set => set.SetProperty(s => s.RevokedAt, now), cancellationToken);
        }
        await bus.SessionEndedAsync(digest.ToHex(), cancellationToken);
    }

    public void Invalidate(TokenDigest digest) => _cache.Invalidate(digest);

    public void Clear() => _cache.Clear();
}

/// <summary>A row of <c>sessions</c>: the digest of a session id, whose it is, and what it may open.</summary>
internal sealed class StoredSession
{
    public required string IdHash { get; init; }
    public long UserId { get; init; }
    public int CredentialVersion { get; init; }
    public DateTime CreatedAt { get; init; }
    public DateTime ExpiresAt { get; init; }
    public DateTime? RevokedAt { get; set; }
    public string? ClientIp { get; init; }
    public string? UserAgent { get; init; }
    /// <summary>The service origin the session belongs to; null for the web UI's own.</summary>
    public string? Service { get; init; }
    /// <summary>The web session a service origin's session was opened from.</summary>
    public string? ParentHash { get; init; }
}

/// <summary>Configuration section <c>Web</c>.</summary>
internal sealed class WebOptions
{
    public const string Section = "Web";

    /// <summary>How long a web session lasts after login, whatever happens meanwhile.</summary>
    public TimeSpan SessionLifetime { get; set; } = TimeSpan.FromHours(12);
}
