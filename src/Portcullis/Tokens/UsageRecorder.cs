using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Runtime.CompilerServices;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage;
using Microsoft.Extensions.Options;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Tokens;

/// <summary>
/// Write-behind for "last used", requests per day and the scopes they relied on (docs/decisions.md, docs/token-policies.md):
/// the request path only bumps counters
/// in memory; a background loop writes them in one transaction per interval. Counts are added to
/// what the database holds, so several instances never overwrite each other, and a failed write
/// puts its counts back to be tried again.
/// </summary>
internal sealed class UsageRecorder(IDbContextFactory<PortcullisDb> dbs, TimeProvider time, IOptions<TokenOptions> options, ILogger<UsageRecorder> logger)
    : BackgroundService
{
    private readonly ConcurrentDictionary<(long TokenId, int Day), Slot> _slots = new();

    /// <summary>Requests per token, scope relied on and day; the requirement itself is the key, so recording allocates nothing.</summary>
    private readonly ConcurrentDictionary<(long TokenId, ScopeRequirement Scope, int Day), StrongBox<long>> _scopes = new();

    private sealed class Slot
    {
        public long Count;
        public long LastUsedTicks;
        public IPAddress? LastIp;
    }

    public void Record(long tokenId, IPAddress? ip, long nowTicks)
    {
        var day = (int)(nowTicks / TimeSpan.TicksPerDay);
        var slot = _slots.GetOrAdd((tokenId, day), static _ => new Slot());
        Interlocked.Increment(ref slot.Count);
        // Last writer wins for the time and address; both are "roughly now" anyway.
        Volatile.Write(ref slot.LastUsedTicks, nowTicks);
        slot.LastIp = ip;
    }

    /// <summary>Notes that a request of the token relied on <paramref name="scope"/> (what narrowing goes by).</summary>
    public void RecordScope(long tokenId, ScopeRequirement scope)
    {
        var day = (int)(time.GetUtcNow().UtcTicks / TimeSpan.TicksPerDay);
        Interlocked.Increment(ref _scopes.GetOrAdd((tokenId, scope, day), static _ => new StrongBox<long>()).Value);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.UsageFlushInterval, time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
                await FlushAsync(stoppingToken);
        }
        catch (OperationCanceledException)
        {
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        await FlushAsync(CancellationToken.None);
    }

    /// <summary>Writes everything recorded so far. Public so tests and shutdown can force it.</summary>
    public async Task FlushAsync(CancellationToken cancellationToken)
    {
        var batch = new List<(long TokenId, int Day, long Count, long Last, IPAddress? Ip, Slot Slot)>();
        foreach (var (key, slot) in _slots)
        {
            var count = Interlocked.Exchange(ref slot.Count, 0);
            if (count == 0)
            {
                // Idle since the last flush: drop it, and put back anything that raced in.
                if (_slots.TryRemove(new KeyValuePair<(long, int), Slot>(key, slot)))
                {
                    var late = Interlocked.Exchange(ref slot.Count, 0);
                    if (late > 0)
                        batch.Add((key.TokenId, key.Day, late, Volatile.Read(ref slot.LastUsedTicks), slot.LastIp, slot));
                }
                continue;
            }
            batch.Add((key.TokenId, key.Day, count, Volatile.Read(ref slot.LastUsedTicks), slot.LastIp, slot));
        }
        var scopes = new List<(long TokenId, ScopeRequirement Scope, int Day, long Count)>();
        foreach (var (key, box) in _scopes)
        {
            var count = Interlocked.Exchange(ref box.Value, 0);
            if (count == 0 && _scopes.TryRemove(new KeyValuePair<(long, ScopeRequirement, int), StrongBox<long>>(key, box)))
                count = Interlocked.Exchange(ref box.Value, 0);
            if (count > 0)
                scopes.Add((key.TokenId, key.Scope, key.Day, count));
        }
        if (batch.Count == 0 && scopes.Count == 0)
            return;

        try
        {
            await using var db = await dbs.CreateDbContextAsync(cancellationToken);
            await using var tx = await db.Database.BeginTransactionAsync(cancellationToken);
            // Two prepared statements reused for every entry: with thousands of tokens in use, two EF queries
            // per entry (each an expression tree to build, look up and bind) showed in the gateway's profile.
            var (connection, transaction) = (db.Database.GetDbConnection(), tx.GetDbTransaction());
            await using var lastUsed = Sql.Command(connection, transaction, """
                UPDATE api_tokens SET last_used_at = @last, last_used_ip = @ip
                WHERE id = @id AND (last_used_at IS NULL OR last_used_at < @last)
                """, ("@id", 0L), ("@last", DateTime.UnixEpoch), ("@ip", ""));
            await using var count = Sql.Command(connection, transaction, """
                INSERT INTO token_usage (token_id, day, count)
                SELECT @id, @day, @count WHERE EXISTS (SELECT 1 FROM api_tokens WHERE id = @id)
                ON CONFLICT (token_id, day) DO UPDATE SET count = token_usage.count + excluded.count
                """, ("@id", 0L), ("@day", ""), ("@count", 0L));
            await using var scopeCount = Sql.Command(connection, transaction, """
                INSERT INTO token_scope_usage (token_id, scope, day, count)
                SELECT @id, @scope, @day, @count WHERE EXISTS (SELECT 1 FROM api_tokens WHERE id = @id)
                ON CONFLICT (token_id, scope, day) DO UPDATE SET count = token_scope_usage.count + excluded.count
                """, ("@id", 0L), ("@scope", ""), ("@day", ""), ("@count", 0L));
            await lastUsed.PrepareAsync(cancellationToken);
            await count.PrepareAsync(cancellationToken);
            await scopeCount.PrepareAsync(cancellationToken);
            foreach (var item in batch)
            {
                lastUsed.Parameters["@id"].Value = item.TokenId;
                lastUsed.Parameters["@last"].Value = new DateTime(item.Last, DateTimeKind.Utc);
                lastUsed.Parameters["@ip"].Value = (object?)item.Ip?.ToString() ?? DBNull.Value;
                await lastUsed.ExecuteNonQueryAsync(cancellationToken);
                count.Parameters["@id"].Value = item.TokenId;
                count.Parameters["@day"].Value = DateOnly.FromDayNumber(item.Day).ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
                count.Parameters["@count"].Value = item.Count;
                await count.ExecuteNonQueryAsync(cancellationToken);
            }
            foreach (var item in scopes)
            {
                scopeCount.Parameters["@id"].Value = item.TokenId;
                scopeCount.Parameters["@scope"].Value = ScopeNarrowing.NameOf(item.Scope);
                scopeCount.Parameters["@day"].Value = DateOnly.FromDayNumber(item.Day).ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
                scopeCount.Parameters["@count"].Value = item.Count;
                await scopeCount.ExecuteNonQueryAsync(cancellationToken);
            }
            await tx.CommitAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            logger.LogWarning("Could not write token usage ({Count} entries); will retry: {Error}", batch.Count + scopes.Count, e.Message);
            foreach (var item in scopes)
                Interlocked.Add(ref _scopes.GetOrAdd((item.TokenId, item.Scope, item.Day), static _ => new StrongBox<long>()).Value, item.Count);
            foreach (var item in batch)
            {
                var slot = _slots.GetOrAdd((item.TokenId, item.Day), static _ => new Slot());
                Interlocked.Add(ref slot.Count, item.Count);
                if (Volatile.Read(ref slot.LastUsedTicks) < item.Last)
                {
                    Volatile.Write(ref slot.LastUsedTicks, item.Last);
                    slot.LastIp = item.Ip;
                }
            }
        }
    }
}
