using System.Collections.Concurrent;

namespace Portcullis.Data;

/// <summary>
/// The one cache primitive under the credential caches (tokens, sessions, OAuth clients): bounded, with negative
/// entries kept apart, and guarded so that a database read overtaken by an invalidation never goes back in.
/// <list type="bullet">
/// <item><b>Generation guard, atomic with invalidation.</b> A loader reads <see cref="Generation"/> before it goes
/// to the database and passes it to <see cref="Store"/>. <see cref="Invalidate"/> moves the generation on
/// <em>before</em> it removes the key; <see cref="Store"/> checks the generation, inserts, and checks it again,
/// taking its own entry back out if an invalidation came in between. Whatever the interleaving, an entry read
/// before an invalidation is not in the cache once that invalidation has returned.</item>
/// <item><b>Bounded, and floods cannot push out good entries.</b> Known credentials and negative entries (digests
/// nobody holds) live in separate maps with their own bounds, so random well-formed tokens only ever evict each
/// other. When a map is full an arbitrary tenth of it is dropped: cheap, and a dropped entry costs one read.</item>
/// </list>
/// </summary>
internal sealed class BoundedCache<TKey, TValue>(int capacity, int negativeCapacity)
    where TKey : notnull
    where TValue : class
{
    private readonly Partition _known = new(capacity);
    private readonly Partition _unknown = new(negativeCapacity);
    private long _generation;

    /// <summary>Read before a database load; pass to <see cref="Store"/> so a concurrent invalidation wins.</summary>
    public long Generation => Volatile.Read(ref _generation);

    public int Count => _known.Count + _unknown.Count;

    public bool TryGet(TKey key, out TValue value) =>
        _known.Entries.TryGetValue(key, out value!) || _unknown.Entries.TryGetValue(key, out value!);

    /// <param name="negative">The entry says "no such credential": kept apart, so floods of them evict only each other.</param>
    public void Store(TKey key, TValue value, long generation, bool negative = false)
    {
        if (Volatile.Read(ref _generation) != generation)
            return;
        var (into, other) = negative ? (_unknown, _known) : (_known, _unknown);
        into.Add(key, value);
        other.Remove(key);
        // An invalidation may have come in since the first check; it moved the generation before removing,
        // so either it removed this entry or this check sees it and takes the entry back out.
        if (Volatile.Read(ref _generation) != generation)
            into.Remove(key, value);
    }

    public void Invalidate(TKey key)
    {
        Interlocked.Increment(ref _generation);
        _known.Remove(key);
        _unknown.Remove(key);
    }

    public void Clear()
    {
        Interlocked.Increment(ref _generation);
        _known.Clear();
        _unknown.Clear();
    }

    private sealed class Partition(int capacity)
    {
        public readonly ConcurrentDictionary<TKey, TValue> Entries = new();
        private int _count;

        public int Count => Volatile.Read(ref _count);

        public void Add(TKey key, TValue value)
        {
            if (Volatile.Read(ref _count) >= capacity)
                Shrink();
            if (Entries.TryAdd(key, value))
                Interlocked.Increment(ref _count);
            else
                Entries[key] = value;
        }

        public void Remove(TKey key)
        {
            if (Entries.TryRemove(key, out _))
                Interlocked.Decrement(ref _count);
        }

        /// <summary>Removes the entry only if it is still this value (a newer one stays).</summary>
        public void Remove(TKey key, TValue value)
        {
            if (Entries.TryRemove(new KeyValuePair<TKey, TValue>(key, value)))
                Interlocked.Decrement(ref _count);
        }

        public void Clear()
        {
            Entries.Clear();
            Volatile.Write(ref _count, 0);
        }

        private void Shrink()
        {
            var toDrop = Math.Max(1, capacity / 10);
            foreach (var key in Entries.Keys)
            {
                if (toDrop-- <= 0)
                    break;
                Remove(key);
            }
        }
    }
}
