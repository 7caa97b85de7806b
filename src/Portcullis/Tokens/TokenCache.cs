using System.Net;
using System.Collections.Concurrent;
using System.Threading.RateLimiting;
using Microsoft.Extensions.Options;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Tokens;

/// <summary>What the verification path knows about one token digest.</summary>
internal sealed class CachedToken
{
    public static CachedToken Unknown(long nowTicks) => new() { LoadedAtTicks = nowTicks, IsKnown = false };

    public bool IsKnown { get; init; } = true;
    public long TokenId { get; init; }
    public string TokenIdText { get; init; } = "";
    public long OwnerId { get; init; }
    public ScopeSet Scopes { get; init; } = ScopeSet.Empty;
    public string Hint { get; init; } = "";

    /// <summary>Ticks from which the token no longer works (expiry or revocation, whichever comes first).</summary>
    public long ValidUntilTicks { get; init; } = long.MaxValue;

    /// <summary>Whether <see cref="ValidUntilTicks"/> comes from a revocation (or rotation) rather than expiry.</summary>
    public bool EndsByRevocation { get; init; }

    public long LoadedAtTicks { get; init; }

    /// <summary>The token's use limit, if it has one: then every use is counted in the database, never answered from here alone.</summary>
    public long? MaxUses { get; init; }

    /// <summary>The ranges the token may be used from, if it is limited to some.</summary>
    public IPNetwork[]? AllowedNetworks { get; init; }

    /// <summary>The token's rate limits, if it has any.</summary>
    public TokenRateLimit? RateLimit { get; init; }

    /// <summary>The key of the token's rate-limit buckets: shared along a line of rotations.</summary>
    public long RateBucket { get; init; }
}

internal enum CacheLookup : byte
{
    Miss,
    Hit,
}

/// <summary>
/// The in-memory map from token digest to what the database said about it (docs/decisions.md). A
/// <see cref="BoundedCache{TKey, TValue}"/>: bounded, negative entries (unknown digests, remembered for a
/// short while so garbage cannot hammer the database) apart from known tokens, and guarded against a read
/// that an invalidation overtook.
/// <para>
/// Beside it, the digest of every token in the database (<see cref="MayExist"/>), loaded at start and told of
/// every new token, on every instance. A random well-formed token, which a negative entry cannot help with since it
/// never repeats, is then refused from memory: only <c>Tokens:UnknownTokenLookupsPerSecond</c> digests outside
/// the set may go to the database, in case one was created a moment ago on another instance.
/// </para>
/// </summary>
internal sealed class TokenCache(IOptions<TokenOptions> options, CacheStoreDelay? storeDelay = null)
{
    private readonly CacheStoreDelay _storeDelay = storeDelay ?? CacheStoreDelay.Off;
    private readonly BoundedCache<TokenDigest, CachedToken> _entries = new(options.Value.CacheSize, options.Value.CacheSize);
    private readonly long _maxAgeTicks = options.Value.CacheMaxAge.Ticks;
    private readonly long _negativeAgeTicks = options.Value.NegativeCacheAge.Ticks;
    private long _hits, _misses;
    private volatile ConcurrentDictionary<TokenDigest, byte>? _existing;
    private readonly TokenBucketRateLimiter _unknownLookups = new(new TokenBucketRateLimiterOptions
    {
        TokenLimit = options.Value.UnknownTokenLookupsPerSecond,
        TokensPerPeriod = options.Value.UnknownTokenLookupsPerSecond,
        ReplenishmentPeriod = TimeSpan.FromSeconds(1),
        QueueLimit = 0,
        AutoReplenishment = true,
    });

    public int Count => _entries.Count;
    public long Hits => Interlocked.Read(ref _hits);
    public long Misses => Interlocked.Read(ref _misses);

    /// <summary>Read before a database load; pass to <see cref="Store"/> so a concurrent invalidation wins.</summary>
    public long Generation => _entries.Generation;

    public bool TryGet(in TokenDigest digest, long nowTicks, out CachedToken entry)
    {
        if (_entries.TryGet(digest, out entry!) &&
            nowTicks - entry.LoadedAtTicks < (entry.IsKnown ? _maxAgeTicks : _negativeAgeTicks))
        {
            Interlocked.Increment(ref _hits);
            return true;
        }
        Interlocked.Increment(ref _misses);
        return false;
    }

    /// <summary>Between the database read and <see cref="Store"/>: the testing hook (nothing unless configured).</summary>
    public ValueTask BeforeStoreAsync(CancellationToken cancellationToken) => _storeDelay.BeforeStoreAsync(CacheStoreDelay.Tokens, cancellationToken);

    public void Store(in TokenDigest digest, CachedToken entry, long generation) => _entries.Store(digest, entry, generation, negative: !entry.IsKnown);

    public void Invalidate(in TokenDigest digest) => _entries.Invalidate(digest);

    /// <summary>
    /// Whether a digest the cache does not hold is worth a database read: it is a token's, or the set is not loaded,
    /// or the budget for digests outside the set allows one more this second.
    /// </summary>
    public bool MayExist(in TokenDigest digest) =>
        _existing is not { } existing || existing.ContainsKey(digest) || _unknownLookups.AttemptAcquire().IsAcquired;

    /// <summary>A token was created, here or on another instance (or found in the database).</summary>
    public void Created(in TokenDigest digest) => _existing?.TryAdd(digest, 0);

    /// <summary>Reads the digest of every token in the database, revoked and expired ones too (their use is still reported).</summary>
    public async Task LoadExistingAsync(System.Data.Common.DbConnection connection, CancellationToken cancellationToken)
    {
        var existing = new ConcurrentDictionary<TokenDigest, byte>();
        await using var cmd = Sql.Command(connection, "SELECT token_hash FROM api_tokens");
        await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
            existing.TryAdd(TokenDigest.FromHex(reader.GetString(0)), 0);
        _existing = existing;
    }

    public void Clear() => _entries.Clear();
}
