using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage;
using Microsoft.Extensions.Options;
using Portcullis.Data;
using Portcullis.Hosting;

namespace Portcullis.Tokens;

/// <summary>
/// Write-behind for "last used" and requests-per-day (docs/decisions.md): the request path only bumps counters
/// in memory; a background loop writes them in one transaction per interval. Counts are added to
/// what the database holds, so several instances never overwrite each other, and a failed write
/// puts its counts back to be tried again.
/// </summary>
internal sealed class UsageRecorder(IDbContextFactory<PortcullisDb> dbs, TimeProvider time, IOptions<TokenOptions> options, ILogger<UsageRecorder> logger)
    : BackgroundService
{
    private readonly ConcurrentDictionary<(long TokenId, int Day), Slot> _slots = new();

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
        if (batch.Count == 0)
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
            await lastUsed.PrepareAsync(cancellationToken);
            await count.PrepareAsync(cancellationToken);
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
            await tx.CommitAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            logger.LogWarning("Could not write token usage ({Count} entries); will retry: {Error}", batch.Count, e.Message);
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
