using System.Data.Common;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;

namespace Portcullis.Audit;

/// <summary>Names of the security events in the audit log.</summary>
internal static class AuditEvents
{
    public const string LoginSucceeded = "login.succeeded";
    public const string LoginFailed = "login.failed";
    public const string LoginThrottled = "login.throttled";
    public const string Logout = "logout";
    public const string TokenCreated = "token.created";
    public const string TokenRotated = "token.rotated";
    public const string TokenRevoked = "token.revoked";
    public const string TokenUsedAfterRevoke = "token.used_after_revoke";
    public const string TokenDeniedSource = "token.denied_source";
    public const string TokenNarrowed = "token.narrowed";
    public const string TokenLinkClaimed = "token.link_claimed";
    public const string TokenLeaked = "token.leaked";
    public const string TokenExpiring = "token.expiring";
    public const string TokenExpired = "token.expired";
    public const string TokenExchanged = "token.exchanged";
    public const string TokenExchangeRefused = "token.exchange_refused";
    public const string UserCreated = "user.created";
    public const string UserUpdated = "user.updated";
    public const string UserDeleted = "user.deleted";
    public const string PasswordChanged = "user.password_changed";
    public const string AdminBootstrapped = "user.admin_bootstrapped";
    public const string SigningKeyCreated = "key.created";
    public const string SigningKeyRotated = "key.rotated";
    public const string ClientCreated = "client.created";
    public const string ClientDeleted = "client.deleted";
    public const string ClientSecretRotated = "client.secret_rotated";
    public const string ClientSecretRevoked = "client.secret_revoked";
    public const string ServiceRegistered = "service.registered";
    public const string ServiceRemoved = "service.removed";
    public const string GatewayDenied = "gateway.denied";
    public const string OriginCodeIssued = "gateway.origin_code_issued";
    public const string OriginLogin = "gateway.origin_login";
    public const string OriginLoginRefused = "gateway.origin_login_refused";
    public const string DeviceAuthorizationStarted = "device.started";
    public const string DeviceCodeRejected = "device.code_rejected";
    public const string DeviceApproved = "device.approved";
    public const string DeviceDenied = "device.denied";
    public const string DeviceTokenCollected = "device.collected";
}

/// <summary>Configuration section <c>Audit</c>.</summary>
internal sealed class AuditOptions
{
    public const string Section = "Audit";

    /// <summary>Events waiting for the background writer, at most; a tenth is kept for events no flood may crowd out.</summary>
    public int QueueCapacity { get; set; } = 10_000;
}

/// <summary>
/// The audit log. Events caused by a management request are added to that request's DbContext so
/// they commit (or not) with the change itself; events seen on the verification path go through a
/// bounded queue written in the background, so the hot path never waits for the database.
/// <para>
/// Security events are never dropped silently (docs/decisions.md, "Audit log"): a request that produces
/// one waits for room in the queue (back-pressure: a flood of failed logins slows the flood, not the
/// log), a tenth of the queue is reserved for events that must not be crowded out
/// (<c>token.used_after_revoke</c>), and anything that is lost all the same is counted in <c>/metrics</c>
/// (<c>portcullis_audit_events_lost_total</c>) and logged as an error.
/// </para>
/// </summary>
internal sealed partial class AuditLog : BackgroundService
{
    private readonly IDbContextFactory<PortcullisDb> _dbs;
    private readonly TimeProvider _time;
    private readonly ILogger<AuditLog> _logger;
    private readonly Channel<(AuditEvent Event, bool Bulk)> _queue;
    private readonly SemaphoreSlim _bulkSlots;

    public AuditLog(IDbContextFactory<PortcullisDb> dbs, TimeProvider time, ILogger<AuditLog> logger, IOptions<AuditOptions> options)
    {
        _dbs = dbs;
        _time = time;
        _logger = logger;
        var capacity = Math.Max(10, options.Value.QueueCapacity);
        _queue = Channel.CreateBounded<(AuditEvent, bool)>(new BoundedChannelOptions(capacity) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true });
        _bulkSlots = new SemaphoreSlim(capacity - capacity / 10);
    }

    private long _loginFailures;
    private long _lost;
    private long _lastLossLoggedTicks;

    /// <summary>Failed password and client-secret checks since start, for <c>/metrics</c>.</summary>
    public long LoginFailures => Interlocked.Read(ref _loginFailures);

    /// <summary>Events that could not be queued or written since start, for <c>/metrics</c>; zero unless something is wrong.</summary>
    public long Lost => Interlocked.Read(ref _lost);

    public AuditEvent Create(HttpContext? http, string name, string? subject = null, long? subjectId = null, string? tokenId = null, object? details = null)
    {
        if (name == AuditEvents.LoginFailed)
            Interlocked.Increment(ref _loginFailures);
        var actor = http?.Features.Get<Credential>();
        return new AuditEvent
        {
            OccurredAt = _time.GetUtcNow().UtcDateTime,
            Event = name,
            Actor = actor?.Owner.Name,
            ActorId = actor?.Owner.Id,
            Subject = subject,
            SubjectId = subjectId,
            TokenId = tokenId,
            ClientIp = http?.ClientAddress()?.ToString(),
            Details = details is null ? null : JsonSerializer.Serialize(details, JsonOptions),
            Notify = Notifications.WebhookEvents.IsNotified(name) ? true : null,
        };
    }

    /// <summary>
    /// Queues an event for the background writer, waiting for room when the queue is full (back-pressure).
    /// Only a caller that gives up (its request was aborted) loses the event, and that is counted.
    /// </summary>
    public async ValueTask EnqueueAsync(AuditEvent e, CancellationToken cancellationToken)
    {
        try
        {
            await _bulkSlots.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            Lose(e, "the request ended while waiting for room in the queue");
            throw;
        }
        if (!_queue.Writer.TryWrite((e, true)))
        {
            _bulkSlots.Release();
            Lose(e, "the queue is closed");
        }
    }

    /// <summary>
    /// Queues an event from code that cannot wait (the verification path), in the part of the queue that
    /// floods of other events cannot fill. Counted and logged if even that is full.
    /// </summary>
    public void EnqueueReserved(AuditEvent e)
    {
        if (!_queue.Writer.TryWrite((e, false)))
            Lose(e, "the queue, its reserve included, is full");
    }

    private void Lose(AuditEvent e, string why)
    {
        Interlocked.Increment(ref _lost);
        var now = _time.GetUtcNow().UtcTicks;
        var last = Interlocked.Read(ref _lastLossLoggedTicks);
        // At most one line a second: the count is in /metrics.
        if (now - last >= TimeSpan.TicksPerSecond && Interlocked.CompareExchange(ref _lastLossLoggedTicks, now, last) == last)
            Log.EventLost(_logger, e.Event, why, Lost);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var batch = new List<AuditEvent>();
        try
        {
            while (await _queue.Reader.WaitToReadAsync(stoppingToken))
            {
                Take(batch);
                // Under a stream of events, gather a little longer: one commit per 100 ms rather than per
                // handful of events, which is what the database's time goes on.
                if (batch.Count is > 16 and < MaxBatch)
                {
                    await Task.Delay(GatherDelay, stoppingToken);
                    Take(batch);
                }
                await WriteAsync(batch, stoppingToken);
            }
        }
        catch (OperationCanceledException)
        {
        }
        Take(batch, int.MaxValue);
        await WriteAsync(batch, CancellationToken.None);
    }

    /// <summary>Moves queued events into the batch, giving their slots back to the producers waiting for room.</summary>
    private void Take(List<AuditEvent> batch, int max = MaxBatch)
    {
        while (batch.Count < max && _queue.Reader.TryRead(out var item))
        {
            batch.Add(item.Event);
            if (item.Bulk)
                _bulkSlots.Release();
        }
    }

    private async Task WriteAsync(List<AuditEvent> batch, CancellationToken cancellationToken)
    {
        if (batch.Count == 0)
            return;
        try
        {
            // One transaction, many rows per statement: thousands of events a second must cost little
            // (one statement per row, or EF's change tracking, took a third of the CPU under load).
            await using var db = await _dbs.CreateDbContextAsync(cancellationToken);
            await db.Database.OpenConnectionAsync(cancellationToken);
            var connection = db.Database.GetDbConnection();
            await using var tx = await connection.BeginTransactionAsync(cancellationToken);
            DbCommand? full = null;
            try
            {
                for (var start = 0; start < batch.Count; start += RowsPerInsert)
                {
                    var rows = Math.Min(RowsPerInsert, batch.Count - start);
                    var cmd = rows == RowsPerInsert ? full ??= InsertCommand(connection, tx, rows) : InsertCommand(connection, tx, rows);
                    var p = cmd.Parameters;
                    for (var i = 0; i < rows; i++)
                    {
                        var e = batch[start + i];
                        var o = i * Columns;
                        p[o].Value = e.OccurredAt;
                        p[o + 1].Value = e.Event;
                        p[o + 2].Value = (object?)e.Actor ?? DBNull.Value;
                        p[o + 3].Value = (object?)e.ActorId ?? DBNull.Value;
                        p[o + 4].Value = (object?)e.Subject ?? DBNull.Value;
                        p[o + 5].Value = (object?)e.SubjectId ?? DBNull.Value;
                        p[o + 6].Value = (object?)e.TokenId ?? DBNull.Value;
                        p[o + 7].Value = (object?)e.ClientIp ?? DBNull.Value;
                        p[o + 8].Value = (object?)e.Details ?? DBNull.Value;
                        p[o + 9].Value = (object?)e.Notify ?? DBNull.Value;
                    }
                    await cmd.ExecuteNonQueryAsync(cancellationToken);
                    if (cmd != full)
                        await cmd.DisposeAsync();
                }
            }
            finally
            {
                if (full is not null)
                    await full.DisposeAsync();
            }
            await tx.CommitAsync(cancellationToken);
            batch.Clear();
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _logger.LogWarning("Could not write {Count} audit events; will retry: {Error}", batch.Count, e.Message);
            // While the database is away the queue fills and producers wait (back-pressure); the batch
            // itself stays within MaxBatch, so nothing is trimmed here.
            await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken);
        }
    }

    private const int RowsPerInsert = 50;
    private const int Columns = 10;
    private const int MaxBatch = 5_000;
    private static readonly TimeSpan GatherDelay = TimeSpan.FromMilliseconds(100);

    private static DbCommand InsertCommand(DbConnection connection, DbTransaction tx, int rows)
    {
        var sql = new StringBuilder("INSERT INTO audit_events (occurred_at, event, actor, actor_id, subject, subject_id, token_id, client_ip, details, notify) VALUES ");
        var cmd = connection.CreateCommand();
        for (var i = 0; i < rows; i++)
        {
            sql.Append(i == 0 ? "(" : ", (");
            for (var c = 0; c < Columns; c++)
            {
                var name = "@p" + (i * Columns + c).ToString(CultureInfo.InvariantCulture);
                sql.Append(c == 0 ? name : ", " + name);
                var parameter = cmd.CreateParameter();
                parameter.ParameterName = name;
                cmd.Parameters.Add(parameter);
            }
            sql.Append(')');
        }
        cmd.CommandText = sql.ToString();
        cmd.Transaction = tx;
        return cmd;
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Error, "Audit event {Event} lost: {Why} ({Lost} lost since start; portcullis_audit_events_lost_total)")]
        public static partial void EventLost(ILogger logger, string @event, string why, long lost);
    }
}
