using System.Collections.Concurrent;
using System.Data.Common;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Data;
using Portcullis.Hosting;

namespace Portcullis.Auth;

/// <summary>
/// The JWT deny-list (docs/decisions.md: "a revoked jti fails at once"). The whole list of unexpired revoked
/// <c>jti</c>s is held in memory, so checking a JWT needs no database read: it is loaded at start,
/// grows through <see cref="InvalidationBus"/> (locally at once, from other instances by NOTIFY),
/// and is re-read now and then in case a notification was lost. An entry is kept until its JWT
/// would have expired anyway (plus the clock skew), then pruned.
/// </summary>
internal sealed class RevokedJwts(IDbContextFactory<PortcullisDb> dbs, TimeProvider time, IOptions<JwtOptions> options, ILogger<RevokedJwts> logger)
{
    private readonly ConcurrentDictionary<string, DateTime> _expiresAt = new(StringComparer.Ordinal);
    private readonly TimeSpan _skew = options.Value.ClockSkew;
    private volatile bool _loaded;

    public int Count => _expiresAt.Count;

    public bool IsRevoked(string jti) => !_expiresAt.IsEmpty && _expiresAt.ContainsKey(jti);

    /// <summary>Records a revocation in memory (after it is committed, or when another instance announces one).</summary>
    public void Add(string jti, DateTime expiresAt) => _expiresAt[jti] = expiresAt;

    /// <summary>
    /// Puts a JWT on the deny-list in the database, within the caller's transaction if it has one.
    /// Returns false when it was already there.
    /// </summary>
    public static async Task<bool> InsertAsync(PortcullisDb db, string jti, DateTime expiresAt, string? subject, DateTime now, CancellationToken cancellationToken) =>
        await db.Database.ExecuteSqlInterpolatedAsync(
            $"INSERT INTO revoked_jwts (jti, expires_at, revoked_at, subject) VALUES ({jti}, {expiresAt}, {now}, {subject}) ON CONFLICT (jti) DO NOTHING",
            cancellationToken) == 1;

    /// <summary>Reads every unexpired entry (start-up, and as a safety net). Entries are only ever added here, never dropped.</summary>
    public async Task LoadAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        var cutoff = time.GetUtcNow().UtcDateTime - _skew;
        await using var cmd = Sql.Command(connection, "SELECT jti, expires_at FROM revoked_jwts WHERE expires_at >= @cutoff", ("@cutoff", cutoff));
        await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
            _expiresAt[reader.GetString(0)] = Sql.Utc(reader, 1);
        _loaded = true;
    }

    /// <summary>Re-reads the list; a no-op before the start-up load (the table may not exist yet).</summary>
    public async Task ReloadAsync(CancellationToken cancellationToken)
    {
        if (!_loaded)
            return;
        try
        {
            await using var db = await dbs.CreateDbContextAsync(cancellationToken);
            await db.Database.OpenConnectionAsync(cancellationToken);
            await LoadAsync(db.Database.GetDbConnection(), cancellationToken);
        }
        catch (Exception e) when (DatabaseFailures.IsDatabaseFailure(e))
        {
            logger.LogWarning("Could not re-read the JWT deny-list: {Error}", e.Message);
        }
    }

    /// <summary>Drops entries whose JWTs have expired beyond the clock skew, in memory and in the database.</summary>
    public async Task PruneAsync(CancellationToken cancellationToken)
    {
        var cutoff = time.GetUtcNow().UtcDateTime - _skew;
        foreach (var (jti, expiresAt) in _expiresAt)
        {
            if (expiresAt < cutoff)
                _expiresAt.TryRemove(jti, out _);
        }
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        await db.RevokedJwts.Where(r => r.ExpiresAt < cutoff).ExecuteDeleteAsync(cancellationToken);
    }
}

/// <summary>A row of <c>revoked_jwts</c>: a JWT on the deny-list until it would have expired anyway.</summary>
internal sealed class RevokedJwt
{
    public required string Jti { get; init; }
    public DateTime ExpiresAt { get; init; }
    public DateTime RevokedAt { get; init; }
    public string? Subject { get; init; }
}
