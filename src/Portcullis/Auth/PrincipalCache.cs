using System.Collections.Concurrent;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Tokens;
using Portcullis.Users;

namespace Portcullis.Auth;

/// <summary>
/// Current rights of every principal that recently presented a credential, so that checking
/// "owner still enabled, still admin" costs a dictionary lookup. Changes to a user invalidate
/// their entry (on every instance, through <see cref="InvalidationBus"/>). A <see cref="BoundedCache{TKey, TValue}"/>
/// like the other credential caches, so a read that a change overtook never goes back in.
/// </summary>
internal sealed class PrincipalCache(IDbContextFactory<PortcullisDb> dbs, TimeProvider time, IOptions<TokenOptions> options, CacheStoreDelay? storeDelay = null)
{
    private readonly BoundedCache<long, PrincipalState> _byId = new(options.Value.CacheSize, negativeCapacity: 0);
    /// <summary>Names of users that exist (only found users are stored), so bounded by the user count.</summary>
    private readonly ConcurrentDictionary<string, long> _idByName = new(StringComparer.Ordinal);
    private readonly long _maxAgeTicks = options.Value.CacheMaxAge.Ticks;
    private readonly CacheStoreDelay _storeDelay = storeDelay ?? CacheStoreDelay.Off;

    /// <summary>A fresh cached entry, or null when it must be (re)loaded.</summary>
    public PrincipalState? TryGet(long id, long nowTicks) =>
        _byId.TryGet(id, out var state) && nowTicks - state.LoadedAtTicks < _maxAgeTicks ? state : null;

    /// <summary>Puts a known state in the cache (start-up warm-up, benchmarks).</summary>
    public void Seed(PrincipalState state)
    {
        _byId.Store(state.Id, state, _byId.Generation);
        _idByName[User.Normalize(state.Name)] = state.Id;
    }

    public async ValueTask<PrincipalState?> GetAsync(long id, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcTicks;
        if (TryGet(id, now) is { } cached)
            return cached;
        var generation = _byId.Generation;
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        var user = await db.Users.AsNoTracking().FirstOrDefaultAsync(u => u.Id == id, cancellationToken);
        return user is null ? null : await StoreAsync(user, now, generation, cancellationToken);
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
        var generation = _byId.Generation;
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        var user = await db.Users.AsNoTracking().FirstOrDefaultAsync(u => u.NormalizedUsername == normalized, cancellationToken);
        return user is null ? null : await StoreAsync(user, time.GetUtcNow().UtcTicks, generation, cancellationToken);
    }

    public static PrincipalState ToState(User user, long nowTicks)
    {
        var rights = user.Kind == PrincipalKind.Service
            ? ScopeSet.Parse(user.Scopes).Union(user.IsAdmin ? ScopeSet.AdminRights : ScopeSet.Empty)
            : user.IsAdmin ? ScopeSet.AdminRights : ScopeSet.UserRights;
        return new PrincipalState(user.Id, user.Username, user.Kind, user.IsAdmin, user.IsDisabled, user.IsDisabled ? ScopeSet.Empty : rights, user.CredentialVersion, nowTicks);
    }

    /// <summary>Caches what was read, unless a change to any principal overtook the read (the generation guard).</summary>
    private async ValueTask<PrincipalState> StoreAsync(User user, long nowTicks, long generation, CancellationToken cancellationToken)
    {
        var state = ToState(user, nowTicks);
        await _storeDelay.BeforeStoreAsync(CacheStoreDelay.Principals, cancellationToken);
        _byId.Store(user.Id, state, generation);
        _idByName[user.NormalizedUsername] = user.Id;
        return state;
    }

    public void Invalidate(long id) => _byId.Invalidate(id);

    public void Clear()
    {
        _byId.Clear();
        _idByName.Clear();
    }
}
