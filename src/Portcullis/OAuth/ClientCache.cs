using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Tokens;

namespace Portcullis.OAuth;

/// <summary>What the token endpoint and the JWT check need to know about one OAuth client.</summary>
internal sealed class CachedClient
{
    public static CachedClient Unknown(long nowTicks) => new() { IsKnown = false, LoadedAtTicks = nowTicks };

    public bool IsKnown { get; init; } = true;
    public string ClientId { get; init; } = "";
    public long OwnerId { get; init; }
    public ScopeSet Scopes { get; init; } = ScopeSet.Empty;
    public TokenDigest SecretDigest { get; init; }
    public int SecretVersion { get; init; }
    public bool SecretRevoked { get; init; }
    public long LoadedAtTicks { get; init; }
}

/// <summary>
/// OAuth clients by <c>client_id</c>, so that issuing a client-credentials token and checking a
/// client's JWT need no database read (docs/decisions.md). Bounded, with short-lived negative entries; every
/// change to a client invalidates its entry on every instance through <see cref="InvalidationBus"/>.
/// </summary>
internal sealed partial class ClientCache(IDbContextFactory<PortcullisDb> dbs, TimeProvider time, IOptions<TokenOptions> options, CacheStoreDelay? storeDelay = null)
{
    private readonly CacheStoreDelay _storeDelay = storeDelay ?? CacheStoreDelay.Off;
    public const string ClientIdPrefix = "client-";
    private const int ClientIdRandomLength = 20;
    private const string ClientIdAlphabet = "0123456789abcdefghijklmnopqrstuvwxyz";

    private readonly BoundedCache<string, CachedClient> _entries = new(options.Value.CacheSize, options.Value.CacheSize);
    private readonly long _maxAgeTicks = options.Value.CacheMaxAge.Ticks;
    private readonly long _negativeAgeTicks = options.Value.NegativeCacheAge.Ticks;

    /// <summary>A new client id: <c>client-</c> and 20 random lowercase letters and digits (≈103 bits).</summary>
    public static string NewClientId() => ClientIdPrefix + RandomNumberGenerator.GetString(ClientIdAlphabet, ClientIdRandomLength);

    /// <summary>Whether the text can be a client id at all; anything else is unknown without a lookup.</summary>
    public static bool IsWellFormed(string clientId) => ClientIdRegex().IsMatch(clientId);

    public async ValueTask<CachedClient> GetAsync(string clientId, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcTicks;
        if (!IsWellFormed(clientId))
            return CachedClient.Unknown(now);
        if (_entries.TryGet(clientId, out var cached) && now - cached.LoadedAtTicks < (cached.IsKnown ? _maxAgeTicks : _negativeAgeTicks))
            return cached;

        var generation = _entries.Generation;
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        var row = await db.OAuthClients.AsNoTracking()
            .Where(c => c.ClientId == clientId)
            .Select(c => new { c.OwnerId, c.Scopes, c.SecretHash, c.SecretVersion, c.SecretRevokedAt })
            .FirstOrDefaultAsync(cancellationToken);
        var entry = row is null
            ? CachedClient.Unknown(now)
            : new CachedClient
            {
                ClientId = clientId,
                OwnerId = row.OwnerId,
                Scopes = ScopeSet.Parse(row.Scopes),
                SecretDigest = TokenDigest.FromHex(row.SecretHash),
                SecretVersion = row.SecretVersion,
                SecretRevoked = row.SecretRevokedAt is not null,
                LoadedAtTicks = now,
            };
        await _storeDelay.BeforeStoreAsync(CacheStoreDelay.Clients, cancellationToken);
        // Only what was read after the last invalidation is kept, so a racing change is never overwritten.
        _entries.Store(clientId, entry, generation, negative: !entry.IsKnown);
        return entry;
    }

    public void Invalidate(string clientId) => _entries.Invalidate(clientId);

    public void Clear() => _entries.Clear();

    [GeneratedRegex("^client-[0-9a-z]{20}$")]
    private static partial Regex ClientIdRegex();
}
