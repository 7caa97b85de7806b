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
/// </summary>
internal sealed class TokenCache(IOptions<TokenOptions> options, CacheStoreDelay? storeDelay = null)
{
    private readonly CacheStoreDelay _storeDelay = storeDelay ?? CacheStoreDelay.Off;
    private readonly BoundedCache<TokenDigest, CachedToken> _entries = new(options.Value.CacheSize, options.Value.CacheSize);
    private readonly long _maxAgeTicks = options.Value.CacheMaxAge.Ticks;
    private readonly long _negativeAgeTicks = options.Value.NegativeCacheAge.Ticks;
    private long _hits, _misses;

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

    public void Clear() => _entries.Clear();
}
