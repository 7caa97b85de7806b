using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Polly;
using Polly.Retry;
using Polly.Timeout;
using Portcullis.Audit;
using Portcullis.Data;
using Portcullis.Security;

namespace Portcullis.Notifications;

/// <summary>
/// Delivers webhooks (docs/notifications.md), on every instance, without two instances sending the same delivery:
/// <list type="number">
/// <item>Fan-out: events marked in the audit log are claimed (the mark cleared in the statement that reads them) and
/// become one delivery per webhook that wants them, in one transaction.</item>
/// <item>Sending: a due delivery is leased (<c>locked_until</c>) by the instance that attempts it. An attempt is a Polly
/// pipeline (a timeout, and quick retries of transient failures); after a failed attempt the next one is scheduled in
/// the database with exponential backoff, for <see cref="NotificationsOptions.RetryFor"/>, so a restart or another
/// instance carries on where this one stopped.</item>
/// <item>Token ends: tokens that expire within 7 days, within 1 day, or have just expired raise an event once each.</item>
/// </list>
/// </summary>
internal sealed partial class WebhookDispatcher(IDbContextFactory<PortcullisDb> dbs, IOptions<NotificationsOptions> options, KeySealing sealing,
    AuditLog audit, TimeProvider time, ILogger<WebhookDispatcher> logger) : BackgroundService
{
    public const string DeliveryHeader = "X-Portcullis-Delivery";
    private const int Batch = 50;

    private readonly NotificationsOptions _options = options.Value;
    private readonly HttpClient _anywhere = CreateClient(options.Value, guarded: false);
    private readonly HttpClient _guarded = CreateClient(options.Value, guarded: !options.Value.AllowLocalTargets);
    private DateTime _nextExpiryScan;

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(_options.PollInterval, time);
        try
        {
            do
            {
                try
                {
                    await RunOnceAsync(stoppingToken);
                }
                catch (Exception e) when (e is not OperationCanceledException && DatabaseFailures.IsDatabaseFailure(e))
                {
                    Log.DatabaseAway(logger, e.Message);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // Whatever went wrong, the server goes on serving; the next round tries again.
                    Log.RoundFailed(logger, e);
                }
            }
            while (await timer.WaitForNextTickAsync(stoppingToken));
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>One round: token ends when due, fan-out, then every delivery that is due. Public so tests can drive it.</summary>
    public async Task RunOnceAsync(CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcDateTime;
        if (now >= _nextExpiryScan)
        {
            _nextExpiryScan = now + _options.ExpiryScanInterval;
            await ScanTokenEndsAsync(now, cancellationToken);
        }
        while (await FanOutAsync(cancellationToken) == Batch)
        {
        }
        while (await SendDueAsync(cancellationToken) > 0)
        {
        }
    }

    /// <summary>Claims up to a batch of marked events and makes their deliveries; returns how many events it claimed.</summary>
    private async Task<int> FanOutAsync(CancellationToken cancellationToken)
    {
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        await using var tx = await db.Database.BeginTransactionAsync(cancellationToken);
        // The mark is tested again on the row itself: of two instances racing for an event, the second finds it cleared.
        var events = await db.AuditEvents.FromSql($"""
            UPDATE audit_events SET notify = NULL
            WHERE notify IS NOT NULL AND id IN (SELECT id FROM audit_events WHERE notify IS NOT NULL ORDER BY id LIMIT {Batch})
            RETURNING *
            """).AsNoTracking().ToListAsync(cancellationToken);
        if (events.Count == 0)
            return 0;
        var owners = events.Where(e => e.SubjectId is not null).Select(e => e.SubjectId!.Value).Distinct().ToList();
        var personal = await db.Webhooks.AsNoTracking().Where(w => owners.Contains(w.OwnerId)).ToListAsync(cancellationToken);
        var now = time.GetUtcNow().UtcDateTime;
        foreach (var e in events.OrderBy(e => e.Id))
        {
            foreach (var url in _options.Webhooks.Where(w => w.Events.Contains(e.Event)).Select(w => w.Url!).Distinct())
                db.WebhookDeliveries.Add(NewDelivery(e, url, webhook: null, now));
            foreach (var webhook in personal.Where(w => w.OwnerId == e.SubjectId && w.Events.Split(' ').Contains(e.Event)))
                db.WebhookDeliveries.Add(NewDelivery(e, webhook.Url, webhook, now));
        }
        await db.SaveChangesAsync(cancellationToken);
        await tx.CommitAsync(cancellationToken);
        return events.Count;
    }

    private static WebhookDelivery NewDelivery(AuditEvent e, string url, Webhook? webhook, DateTime now)
    {
        var id = Guid.CreateVersion7().ToString();
        // What the event says, never a secret: audit events carry token hints, not tokens.
        var payload = JsonSerializer.Serialize(new
        {
            id,
            @event = e.Event,
            occurred_at = e.OccurredAt,
            token_id = e.TokenId,
            owner = e.Subject,
            owner_id = e.SubjectId,
            actor = e.Actor,
            client_ip = e.ClientIp,
            details = e.Details is null ? (JsonElement?)null : JsonDocument.Parse(e.Details).RootElement,
        }, Json);
        return new WebhookDelivery
        {
            DeliveryId = id,
            WebhookId = webhook?.Id,
            OwnerId = webhook?.OwnerId,
            Url = url,
            Event = e.Event,
            Payload = payload,
            Status = WebhookDelivery.Pending,
            CreatedAt = now,
            NextAttemptAt = now,
        };
    }

    /// <summary>Leases the deliveries that are due and attempts them; returns how many it attempted.</summary>
    private async Task<int> SendDueAsync(CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcDateTime;
        var leaseEnds = now + _options.AttemptTimeout * 4 + TimeSpan.FromSeconds(10);
        List<WebhookDelivery> due;
        await using (var db = await dbs.CreateDbContextAsync(cancellationToken))
        {
            due = await db.WebhookDeliveries.FromSql($"""
                UPDATE webhook_deliveries SET locked_until = {leaseEnds}, attempts = attempts + 1
                WHERE status = 'pending' AND next_attempt_at <= {now} AND (locked_until IS NULL OR locked_until < {now})
                  AND id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= {now}
                             AND (locked_until IS NULL OR locked_until < {now}) ORDER BY next_attempt_at LIMIT 10)
                RETURNING *
                """).AsNoTracking().ToListAsync(cancellationToken);
        }
        await Task.WhenAll(due.Select(d => AttemptAsync(d, cancellationToken)));
        return due.Count;
    }

    private async Task AttemptAsync(WebhookDelivery delivery, CancellationToken cancellationToken)
    {
        int? status = null;
        string? error = null;
        try
        {
            var secret = await SecretOfAsync(delivery, cancellationToken);
            if (secret is null)
                error = "The webhook's secret cannot be read (its webhook was changed or its key-encryption key is not this server's).";
            else
            {
                var body = Encoding.UTF8.GetBytes(delivery.Payload);
                var signature = "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(secret, body));
                var client = delivery.WebhookId is null ? _anywhere : _guarded;
                using var response = await _attempt.ExecuteAsync(async token =>
                {
                    using var request = new HttpRequestMessage(HttpMethod.Post, delivery.Url) { Content = new ByteArrayContent(body) };
                    request.Content.Headers.ContentType = new("application/json") { CharSet = "utf-8" };
                    request.Headers.TryAddWithoutValidation("X-Portcullis-Event", delivery.Event);
                    request.Headers.TryAddWithoutValidation(DeliveryHeader, delivery.DeliveryId);
                    request.Headers.TryAddWithoutValidation("X-Portcullis-Signature-256", signature);
                    return await client.SendAsync(request, token);
                }, cancellationToken);
                status = (int)response.StatusCode;
                if (!response.IsSuccessStatusCode)
                    error = $"The receiver answered {status}.";
            }
        }
        catch (Exception e) when (e is HttpRequestException or TimeoutRejectedException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            error = e is TimeoutRejectedException ? $"No answer within {_options.AttemptTimeout.TotalSeconds:0} s." : e.Message;
        }
        await RecordAsync(delivery, status, error, cancellationToken);
    }

    /// <summary>Success, the next attempt with exponential backoff, or giving up after <see cref="NotificationsOptions.RetryFor"/>.</summary>
    private async Task RecordAsync(WebhookDelivery delivery, int? status, string? error, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcDateTime;
        var wait = TimeSpan.FromTicks(Math.Min(_options.MaxRetryDelay.Ticks,
            _options.FirstRetryDelay.Ticks * (1L << Math.Min(delivery.Attempts - 1, 30))));
        var next = now + wait;
        var outcome = error is null ? WebhookDelivery.Delivered : next > delivery.CreatedAt + _options.RetryFor ? WebhookDelivery.Failed : WebhookDelivery.Pending;
        if (outcome == WebhookDelivery.Failed)
            Log.GaveUp(logger, delivery.DeliveryId, TargetOf(delivery.Url), delivery.Attempts, error!);
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        await db.WebhookDeliveries.Where(d => d.Id == delivery.Id).ExecuteUpdateAsync(set => set
            .SetProperty(d => d.Status, outcome)
            .SetProperty(d => d.LastStatus, status)
            .SetProperty(d => d.LastError, error)
            .SetProperty(d => d.LockedUntil, (DateTime?)null)
            .SetProperty(d => d.DeliveredAt, outcome == WebhookDelivery.Delivered ? now : null)
            .SetProperty(d => d.NextAttemptAt, next), cancellationToken);
    }

    private async Task<byte[]?> SecretOfAsync(WebhookDelivery delivery, CancellationToken cancellationToken)
    {
        if (delivery.WebhookId is not { } id)
            return _options.Webhooks.FirstOrDefault(w => w.Url == delivery.Url)?.Secret is { } configured ? Encoding.UTF8.GetBytes(configured) : null;
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        var sealedSecret = await db.Webhooks.AsNoTracking().Where(w => w.Id == id).Select(w => w.SealedSecret).FirstOrDefaultAsync(cancellationToken);
        return sealedSecret is null ? null : sealing.Unseal(sealedSecret, KeySealing.WebhookSecrets, id.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>
    /// One attempt: a timeout per try, and two quick retries of what is usually passing (no connection, 408, 429, 5xx).
    /// The long backoff between attempts lives in the database (<see cref="RecordAsync"/>), not here.
    /// </summary>
    private readonly ResiliencePipeline<HttpResponseMessage> _attempt = new ResiliencePipelineBuilder<HttpResponseMessage>()
        .AddRetry(new RetryStrategyOptions<HttpResponseMessage>
        {
            MaxRetryAttempts = 2,
            BackoffType = DelayBackoffType.Exponential,
            UseJitter = true,
            Delay = TimeSpan.FromMilliseconds(200),
            ShouldHandle = new PredicateBuilder<HttpResponseMessage>()
                .Handle<HttpRequestException>()
                .Handle<TimeoutRejectedException>()
                .HandleResult(r => r.StatusCode is HttpStatusCode.RequestTimeout or HttpStatusCode.TooManyRequests || (int)r.StatusCode >= 500),
        })
        .AddTimeout(options.Value.AttemptTimeout)
        .Build();

    /// <summary>
    /// A client that never follows redirects (a receiver cannot send the request elsewhere) and, guarded, refuses to
    /// connect to this machine or to link-local addresses, checked on the addresses the name resolves to when connecting.
    /// </summary>
    private static HttpClient CreateClient(NotificationsOptions options, bool guarded)
    {
        var handler = new SocketsHttpHandler { AllowAutoRedirect = false, UseCookies = false, ConnectTimeout = options.AttemptTimeout };
        if (guarded)
        {
            handler.ConnectCallback = async (context, cancellationToken) =>
            {
                var addresses = await Dns.GetHostAddressesAsync(context.DnsEndPoint.Host, cancellationToken);
                var allowed = addresses.Where(a => !WebhookRules.IsLocal(a)).ToArray();
                if (allowed.Length == 0)
                    throw new HttpRequestException($"{context.DnsEndPoint.Host} is this machine or link-local; a person's webhook may not reach it (Notifications:AllowLocalTargets).");
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(allowed, context.DnsEndPoint.Port, cancellationToken);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }
        var client = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
        client.DefaultRequestHeaders.UserAgent.ParseAdd($"Portcullis-Webhook/{typeof(WebhookDispatcher).Assembly.GetName().Version?.ToString(3)}");
        return client;
    }

    /// <summary>
    /// Raises token.expiring (7 days, 1 day before) and token.expired, each once per token, whichever instance gets there
    /// first; and deletes the sealed tokens of one-time links that can no longer be opened (expired, or their token revoked).
    /// </summary>
    private async Task ScanTokenEndsAsync(DateTime now, CancellationToken cancellationToken)
    {
        await using (var db = await dbs.CreateDbContextAsync(cancellationToken))
        {
            await db.TokenLinks.Where(l => l.SealedToken != null
                    && (l.ExpiresAt <= now || db.ApiTokens.Any(t => t.Id == l.TokenId && t.RevokedAt <= now)))
                .ExecuteUpdateAsync(set => set.SetProperty(l => l.SealedToken, (string?)null), cancellationToken);
        }
        foreach (var (notice, within) in new[] { ("expiring_7d", TimeSpan.FromDays(7)), ("expiring_1d", TimeSpan.FromDays(1)), ("expired", TimeSpan.Zero) })
        {
            await using var db = await dbs.CreateDbContextAsync(cancellationToken);
            var until = now + within;
            var since = now - TimeSpan.FromDays(1);
            // A token whose whole life is shorter than the notice's lead time is not warned (a one-day token is not "expiring" at birth);
            // expired: only those that ended in the last day, not every token that ever ended before this existed.
            var (from, to) = within == TimeSpan.Zero ? (since, now) : (now, until);
            var candidates = await db.ApiTokens.AsNoTracking()
                .Where(t => t.ExpiresAt > from && t.ExpiresAt <= to && (t.RevokedAt == null || t.RevokedAt > t.ExpiresAt)
                    && !db.TokenNotices.Any(n => n.TokenId == t.Id && n.Notice == notice))
                .Join(db.Users, t => t.OwnerId, u => u.Id, (t, u) => new { t.Id, t.OwnerId, t.Name, t.Hint, t.CreatedAt, t.ExpiresAt, Owner = u.Username })
                .OrderBy(t => t.ExpiresAt).Take(500).ToListAsync(cancellationToken);
            foreach (var token in candidates.Where(t => within == TimeSpan.Zero || t.ExpiresAt - t.CreatedAt >= within))
            {
                await using var tx = await db.Database.BeginTransactionAsync(cancellationToken);
                if (await db.Database.ExecuteSqlAsync(
                        $"INSERT INTO token_notices (token_id, notice) VALUES ({token.Id}, {notice}) ON CONFLICT DO NOTHING", cancellationToken) != 1)
                    continue;
                db.AuditEvents.Add(audit.Create(null, within == TimeSpan.Zero ? AuditEvents.TokenExpired : AuditEvents.TokenExpiring, token.Owner, token.OwnerId,
                    token.Id.ToString(CultureInfo.InvariantCulture),
                    new { name = token.Name, hint = token.Hint, expires_at = token.ExpiresAt, days_left = within == TimeSpan.Zero ? 0 : (int)within.TotalDays }));
                await db.SaveChangesAsync(cancellationToken);
                await tx.CommitAsync(cancellationToken);
                db.ChangeTracker.Clear();
            }
        }
    }

    /// <summary>Where a delivery goes, without the path and query that some receivers use as their secret.</summary>
    public static string TargetOf(string url) => Uri.TryCreate(url, UriKind.Absolute, out var uri) ? uri.GetLeftPart(UriPartial.Authority) : "?";

    public override void Dispose()
    {
        _anywhere.Dispose();
        _guarded.Dispose();
        base.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Webhooks wait: the database did not answer ({Error})")]
        public static partial void DatabaseAway(ILogger logger, string error);

        [LoggerMessage(3, LogLevel.Error, "A round of webhook deliveries failed; the next round tries again")]
        public static partial void RoundFailed(ILogger logger, Exception exception);

        [LoggerMessage(2, LogLevel.Warning, "Gave up webhook delivery {DeliveryId} to {Target} after {Attempts} attempts: {Error}")]
        public static partial void GaveUp(ILogger logger, string deliveryId, string target, int attempts, string error);
    }
}
