using System.Data.Common;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.EntityFrameworkCore;
using Portcullis.Auth;
using Portcullis.Data;

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
}

/// <summary>
/// The audit log. Events caused by a management request are added to that request's DbContext so
/// they commit (or not) with the change itself; events seen on the verification path go through a
/// bounded queue written in the background, so the hot path never waits for the database.
/// </summary>
internal sealed class AuditLog(IServiceScopeFactory scopes, TimeProvider time, ILogger<AuditLog> logger) : BackgroundService
{
    private readonly Channel<AuditEvent> _queue = Channel.CreateBounded<AuditEvent>(
        new BoundedChannelOptions(10_000) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true });

    private long _loginFailures;

    /// <summary>Failed password and client-secret checks since start, for <c>/metrics</c>.</summary>
    public long LoginFailures => Interlocked.Read(ref _loginFailures);

    public AuditEvent Create(HttpContext? http, string name, string? subject = null, long? subjectId = null, string? tokenId = null, object? details = null)
    {
        if (name == AuditEvents.LoginFailed)
            Interlocked.Increment(ref _loginFailures);
        var actor = http?.Features.Get<Credential>();
        return new AuditEvent
        {
            OccurredAt = time.GetUtcNow().UtcDateTime,
            Event = name,
            Actor = actor?.Owner.Name,
            ActorId = actor?.Owner.Id,
            Subject = subject,
            SubjectId = subjectId,
            TokenId = tokenId,
            ClientIp = http?.Connection.RemoteIpAddress?.ToString(),
            Details = details is null ? null : JsonSerializer.Serialize(details, JsonOptions),
        };
    }

    /// <summary>
    /// Queues an event for the background writer without waiting (verification path). Only when
    /// 10,000 events are already waiting, i.e. under a flood the database cannot keep up with, is
    /// the event dropped, and that is logged.
    /// </summary>
    public void Enqueue(AuditEvent e)
    {
        if (!_queue.Writer.TryWrite(e))
            logger.LogWarning("Audit queue full; dropped event {Event}", e.Event);
    }

    /// <summary>
    /// Queues an event for the background writer, waiting for room when the queue is full: for
    /// events that must not be lost but need not commit with the request, such as issued tokens.
    /// </summary>
    public ValueTask EnqueueAsync(AuditEvent e, CancellationToken cancellationToken) => _queue.Writer.WriteAsync(e, cancellationToken);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var batch = new List<AuditEvent>();
        try
        {
            while (await _queue.Reader.WaitToReadAsync(stoppingToken))
            {
                while (batch.Count < MaxBatch && _queue.Reader.TryRead(out var e))
                    batch.Add(e);
                // Under a stream of events, gather a little longer: one commit per 100 ms rather than per
                // handful of events, which is what the database's time goes on.
                if (batch.Count is > 16 and < MaxBatch)
                {
                    await Task.Delay(GatherDelay, stoppingToken);
                    while (batch.Count < MaxBatch && _queue.Reader.TryRead(out var e))
                        batch.Add(e);
                }
                await WriteAsync(batch, stoppingToken);
            }
        }
        catch (OperationCanceledException)
        {
        }
        while (_queue.Reader.TryRead(out var e))
            batch.Add(e);
        await WriteAsync(batch, CancellationToken.None);
    }

    private async Task WriteAsync(List<AuditEvent> batch, CancellationToken cancellationToken)
    {
        if (batch.Count == 0)
            return;
        try
        {
            // One transaction, many rows per statement: thousands of events a second must cost little
            // (one statement per row, or EF's change tracking, took a third of the CPU under load).
            await using var scope = scopes.CreateAsyncScope();
            var db = scope.ServiceProvider.GetRequiredService<PortcullisDb>();
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
                        var o = i * 9;
                        p[o].Value = e.OccurredAt;
                        p[o + 1].Value = e.Event;
                        p[o + 2].Value = (object?)e.Actor ?? DBNull.Value;
                        p[o + 3].Value = (object?)e.ActorId ?? DBNull.Value;
                        p[o + 4].Value = (object?)e.Subject ?? DBNull.Value;
                        p[o + 5].Value = (object?)e.SubjectId ?? DBNull.Value;
                        p[o + 6].Value = (object?)e.TokenId ?? DBNull.Value;
                        p[o + 7].Value = (object?)e.ClientIp ?? DBNull.Value;
                        p[o + 8].Value = (object?)e.Details ?? DBNull.Value;
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
            logger.LogWarning("Could not write {Count} audit events; will retry: {Error}", batch.Count, e.Message);
            if (batch.Count > 5_000)
                batch.RemoveRange(0, batch.Count - 5_000);
            await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken);
        }
    }

    private const int RowsPerInsert = 50;
    private const int MaxBatch = 5_000;
    private static readonly TimeSpan GatherDelay = TimeSpan.FromMilliseconds(100);

    private static DbCommand InsertCommand(DbConnection connection, DbTransaction tx, int rows)
    {
        var sql = new StringBuilder("INSERT INTO audit_events (occurred_at, event, actor, actor_id, subject, subject_id, token_id, client_ip, details) VALUES ");
        var cmd = connection.CreateCommand();
        for (var i = 0; i < rows; i++)
        {
            sql.Append(i == 0 ? "(" : ", (");
            for (var c = 0; c < 9; c++)
            {
                var name = "@p" + (i * 9 + c).ToString(CultureInfo.InvariantCulture);
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
}
