using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
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
/// The in-memory map from token digest to what the database said about it (SPEC §6). Bounded: when
/// full, an arbitrary tenth is dropped (cheap, and a dropped entry only costs one database read).
/// Negative entries remember unknown digests for a short while so garbage cannot hammer the database.
/// </summary>
internal sealed class TokenCache(IOptions<TokenOptions> options)
{
    private readonly ConcurrentDictionary<TokenDigest, CachedToken> _entries = new();
    private readonly int _capacity = options.Value.CacheSize;
    private readonly long _maxAgeTicks = options.Value.CacheMaxAge.Ticks;
    private readonly long _negativeAgeTicks = options.Value.NegativeCacheAge.Ticks;
    private int _count;
    private long _generation;
    private long _hits, _misses;

    public int Count => Volatile.Read(ref _count);
    public long Hits => Interlocked.Read(ref _hits);
    public long Misses => Interlocked.Read(ref _misses);

    /// <summary>Read before a database load; pass to <see cref="Store"/> so a concurrent invalidation wins.</summary>
    public long Generation => Volatile.Read(ref _generation);

    public bool TryGet(in TokenDigest digest, long nowTicks, out CachedToken entry)
    {
        if (_entries.TryGetValue(digest, out entry!) &&
            nowTicks - entry.LoadedAtTicks < (entry.IsKnown ? _maxAgeTicks : _negativeAgeTicks))
        {
            Interlocked.Increment(ref _hits);
            return true;
        }
        Interlocked.Increment(ref _misses);
        return false;
    }

    public void Store(in TokenDigest digest, CachedToken entry, long generation)
    {
        if (Volatile.Read(ref _generation) != generation)
            return;
        if (Volatile.Read(ref _count) >= _capacity)
            Shrink();
        if (_entries.TryAdd(digest, entry))
            Interlocked.Increment(ref _count);
        else
            _entries[digest] = entry;
    }

    public void Invalidate(in TokenDigest digest)
    {
        Interlocked.Increment(ref _generation);
        if (_entries.TryRemove(digest, out _))
            Interlocked.Decrement(ref _count);
    }

    public void Clear()
    {
        Interlocked.Increment(ref _generation);
        _entries.Clear();
        Volatile.Write(ref _count, 0);
    }

    private void Shrink()
    {
        var toDrop = Math.Max(1, _capacity / 10);
        foreach (var key in _entries.Keys)
        {
            if (toDrop-- <= 0)
                break;
            if (_entries.TryRemove(key, out _))
                Interlocked.Decrement(ref _count);
        }
    }
}
