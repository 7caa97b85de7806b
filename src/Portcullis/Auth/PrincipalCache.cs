using System.Collections.Concurrent;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Users;

namespace Portcullis.Auth;

/// <summary>
/// Current rights of every principal that recently presented a credential, so that checking
/// "owner still enabled, still admin" costs a dictionary lookup. Changes to a user invalidate
/// their entry (on every instance, through <see cref="InvalidationBus"/>).
/// </summary>
internal sealed class PrincipalCache(IServiceScopeFactory scopes, TimeProvider time, IOptions<TokenOptions> options)
{
    private readonly ConcurrentDictionary<long, PrincipalState> _byId = new();
    private readonly ConcurrentDictionary<string, long> _idByName = new(StringComparer.Ordinal);
    private readonly long _maxAgeTicks = options.Value.CacheMaxAge.Ticks;
    private long _generation;

    /// <summary>A fresh cached entry, or null when it must be (re)loaded.</summary>
    public PrincipalState? TryGet(long id, long nowTicks) =>
        _byId.TryGetValue(id, out var state) && nowTicks - state.LoadedAtTicks < _maxAgeTicks ? state : null;

    /// <summary>Puts a known state in the cache (start-up warm-up, benchmarks).</summary>
    public void Seed(PrincipalState state)
    {
        _byId[state.Id] = state;
        _idByName[User.Normalize(state.Name)] = state.Id;
    }

    public async ValueTask<PrincipalState?> GetAsync(long id, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcTicks;
        if (TryGet(id, now) is { } cached)
            return cached;
        var generation = Volatile.Read(ref _generation);
        await using var scope = scopes.CreateAsyncScope();
        var db = scope.ServiceProvider.GetRequiredService<PortcullisDb>();
        var user = await db.Users.AsNoTracking().FirstOrDefaultAsync(u => u.Id == id, cancellationToken);
        return user is null ? null : Store(user, now, generation);
    }

    public async ValueTask<PrincipalState?> GetByNameAsync(string username, CancellationToken cancellationToken)
    {
        var normalized = User.Normalize(username);
        if (_idByName.TryGetValue(normalized, out var id))
        {
            if (await GetAsync(id, cancellationToken) is { } known && User.Normalize(known.Name) == normalized)
                return known;
            _idByName.TryRemove(normalized, out _);
        }
        var generation = Volatile.Read(ref _generation);
        await using var scope = scopes.CreateAsyncScope();
        var db = scope.ServiceProvider.GetRequiredService<PortcullisDb>();
        var user = await db.Users.AsNoTracking().FirstOrDefaultAsync(u => u.NormalizedUsername == normalized, cancellationToken);
        return user is null ? null : Store(user, time.GetUtcNow().UtcTicks, generation);
    }

    public static PrincipalState ToState(User user, long nowTicks)
    {
        var rights = user.Kind == PrincipalKind.Service
            ? ScopeSet.Parse(user.Scopes).Union(user.IsAdmin ? ScopeSet.AdminRights : ScopeSet.Empty)
            : user.IsAdmin ? ScopeSet.AdminRights : ScopeSet.UserRights;
        return new PrincipalState(user.Id, user.Username, user.Kind, user.IsAdmin, user.IsDisabled, user.IsDisabled ? ScopeSet.Empty : rights, user.CredentialVersion, nowTicks);
    }

    private PrincipalState Store(User user, long nowTicks, long generation)
    {
        var state = ToState(user, nowTicks);
        // Only cache what was read after the last invalidation; otherwise a revocation racing this
        // read could be overwritten by the stale row.
        if (Volatile.Read(ref _generation) == generation)
        {
            _byId[user.Id] = state;
            _idByName[user.NormalizedUsername] = user.Id;
            // The same guard as Data/BoundedCache.cs: an invalidation between the check and the insert moved
            // the generation before removing, so it is seen here and the stale state taken back out.
            if (Volatile.Read(ref _generation) != generation)
                _byId.TryRemove(new KeyValuePair<long, PrincipalState>(user.Id, state));
        }
        return state;
    }

    public void Invalidate(long id)
    {
        Interlocked.Increment(ref _generation);
        _byId.TryRemove(id, out _);
    }

    public void Clear()
    {
        Interlocked.Increment(ref _generation);
        _byId.Clear();
        _idByName.Clear();
    }
}
