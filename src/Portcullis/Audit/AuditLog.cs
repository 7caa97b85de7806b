using System.Text.Json;
using System.Threading.Channels;
using Portcullis.Auth;
using Portcullis.Data;

namespace Portcullis.Audit;

/// <summary>Names of the security events in the audit log.</summary>
internal static class AuditEvents
{
    public const string LoginSucceeded = "login.succeeded";
    public const string LoginFailed = "login.failed";
    public const string LoginThrottled = "login.throttled";
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
}

/// <summary>
/// The audit log. Events caused by a management request are added to that request's DbContext so
/// they commit (or not) with the change itself; events seen on the verification path go through a
/// bounded queue written in the background, so the hot path never waits for the database.
/// </summary>
internal sealed class AuditLog(IServiceScopeFactory scopes, TimeProvider time, ILogger<AuditLog> logger) : BackgroundService
{
    private readonly Channel<AuditEvent> _queue = Channel.CreateBounded<AuditEvent>(
        new BoundedChannelOptions(10_000) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });

    public AuditEvent Create(HttpContext? http, string name, string? subject = null, long? subjectId = null, string? tokenId = null, object? details = null)
    {
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

    /// <summary>Queues an event for the background writer (verification path).</summary>
    public void Enqueue(AuditEvent e)
    {
        if (!_queue.Writer.TryWrite(e))
            logger.LogWarning("Audit queue full; dropped event {Event}", e.Event);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var batch = new List<AuditEvent>();
        try
        {
            while (await _queue.Reader.WaitToReadAsync(stoppingToken))
            {
                while (batch.Count < 500 && _queue.Reader.TryRead(out var e))
                    batch.Add(e);
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
            await using var scope = scopes.CreateAsyncScope();
            var db = scope.ServiceProvider.GetRequiredService<PortcullisDb>();
            db.AuditEvents.AddRange(batch);
            await db.SaveChangesAsync(cancellationToken);
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

    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
}
