using System.Diagnostics.Metrics;
using Microsoft.EntityFrameworkCore;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Security;
using Portcullis.Tokens;

namespace Portcullis.Hosting;

/// <summary>
/// Portcullis's own instruments, on the <see cref="MeterName"/> meter (<see cref="System.Diagnostics.Metrics"/>): exported
/// at <c>/metrics</c> by OpenTelemetry's Prometheus exporter and, when <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is set, over OTLP
/// (Hosting/Telemetry.cs). Instrument names become Prometheus names by OpenTelemetry's rules: dots become underscores, a
/// counter gains <c>_total</c> and a unit of seconds <c>_seconds</c> (docs/operations.md, "Metrics").
/// </summary>
internal sealed class PortcullisMetrics
{
    public const string MeterName = "Portcullis";

    /// <summary>Counting active tokens scans an index; once per this interval is enough for a gauge.</summary>
    private static readonly TimeSpan ActiveTokensRefresh = TimeSpan.FromSeconds(15);

    /// <summary>Upstream latency buckets, in seconds: from a local model server's quick answer to the gateway's 30 s timeout.</summary>
    private static readonly double[] UpstreamBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

    private static readonly string[] OutcomeNames = Enum.GetNames<VerifyFailure>()
        .Select(n => n == nameof(VerifyFailure.None) ? "valid" : System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(n)).ToArray();

    private readonly IDbContextFactory<PortcullisDb> _dbs;
    private readonly TimeProvider _time;
    private readonly ILogger<PortcullisMetrics> _logger;
    private readonly Counter<long> _requests;
    private readonly Counter<long> _verifications;
    private readonly Counter<long> _loginsThrottled;
    private readonly Histogram<double> _upstream;

    private long _activeTokens = -1;
    private long _activeTokensAtTicks = long.MinValue / 2;
    private readonly SemaphoreSlim _activeTokensLock = new(1, 1);

    public PortcullisMetrics(IMeterFactory meters, TokenCache cache, PasswordHasher passwords, Audit.AuditLog audit, IDbContextFactory<PortcullisDb> dbs,
        TimeProvider time, ILogger<PortcullisMetrics> logger)
    {
        (_dbs, _time, _logger) = (dbs, time, logger);
        var meter = meters.Create(MeterName);
        _requests = meter.CreateCounter<long>("portcullis.http.requests", description: "HTTP requests by route pattern and status code.");
        _verifications = meter.CreateCounter<long>("portcullis.credential.verifications", description: "Credential checks by outcome.");
        _loginsThrottled = meter.CreateCounter<long>("portcullis.logins.throttled",
            description: "Password and client-secret checks refused because of too many failures.");
        _upstream = meter.CreateHistogram("portcullis.upstream.request.duration", unit: "s",
            description: "Time until a gateway upstream answered with its headers (or failed), by service.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = UpstreamBuckets });

        meter.CreateObservableGauge("portcullis.active_tokens", ActiveTokens,
            description: "API and service tokens neither revoked nor expired (refreshed at most every 15 s).");
        meter.CreateObservableCounter("portcullis.login_failures", () => audit.LoginFailures,
            description: "Failed password and client-secret checks, on every path.");
        meter.CreateObservableCounter("portcullis.audit_events_lost", () => audit.Lost,
            description: "Audit events that could not be queued or written (zero unless something is wrong; each is also logged).");
        meter.CreateObservableCounter("portcullis.token_cache.lookups",
            () => new Measurement<long>[] { new(cache.Hits, new KeyValuePair<string, object?>("result", "hit")), new(cache.Misses, new KeyValuePair<string, object?>("result", "miss")) },
            description: "Token cache lookups by result.");
        meter.CreateObservableGauge("portcullis.token_cache.hit_ratio", () => cache.Hits + cache.Misses is var lookups and > 0 ? Math.Round((double)cache.Hits / lookups, 4) : 0,
            description: "Token cache hits over lookups since start.");
        meter.CreateObservableGauge("portcullis.token_cache.entries", () => (long)cache.Count, description: "Entries in the token cache.");
        meter.CreateObservableCounter("portcullis.password_checks", () => passwords.Checks,
            description: "Password checks run, including the dummy checks for unknown users.");
    }

    public void CountRequest(string route, int status) =>
        _requests.Add(1, new KeyValuePair<string, object?>("route", route), new KeyValuePair<string, object?>("status", Boxed(status)));

    private static readonly object[] Statuses = Enumerable.Range(0, 600).Select(status => (object)status).ToArray();

    /// <summary>A status code as the tag's object, boxed once: counting a request then allocates nothing (docs/performance.md).</summary>
    internal static object Boxed(int status) => (uint)status < Statuses.Length ? Statuses[status] : status;

    /// <summary>How long an upstream took to answer with its headers (or to fail), by service.</summary>
    public void ObserveUpstream(string service, TimeSpan elapsed) =>
        _upstream.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("service", service));

    public void CountLoginThrottled() => _loginsThrottled.Add(1);

    public void CountVerification(VerifyFailure outcome) =>
        _verifications.Add(1, new KeyValuePair<string, object?>("outcome", OutcomeNames[(int)outcome]));

    /// <summary>
    /// The last count, and a refresh in the background when it is older than 15 s (an exporter's callback cannot wait for
    /// the database). A Prometheus scrape awaits <see cref="RefreshActiveTokensAsync"/> first, so it reads a fresh count.
    /// </summary>
    private IEnumerable<Measurement<long>> ActiveTokens()
    {
        if (IsStale)
            _ = RefreshActiveTokensAsync(CancellationToken.None);
        return Interlocked.Read(ref _activeTokens) is var active and >= 0 ? [new Measurement<long>(active)] : [];
    }

    private bool IsStale => _time.GetUtcNow().UtcTicks - Interlocked.Read(ref _activeTokensAtTicks) >= ActiveTokensRefresh.Ticks;

    /// <summary>Counts active tokens when the last count is older than 15 s; one count at a time, the others return at once.</summary>
    public async Task RefreshActiveTokensAsync(CancellationToken cancellationToken)
    {
        if (!IsStale || !await _activeTokensLock.WaitAsync(0, cancellationToken))
            return;
        try
        {
            var now = _time.GetUtcNow();
            await using var db = await _dbs.CreateDbContextAsync(cancellationToken);
            var at = now.UtcDateTime;
            var count = await db.ApiTokens.CountAsync(t => t.RevokedAt == null && (t.ExpiresAt == null || t.ExpiresAt > at), cancellationToken);
            Interlocked.Exchange(ref _activeTokens, count);
            Interlocked.Exchange(ref _activeTokensAtTicks, now.UtcTicks);
        }
        catch (Exception e) when (Data.DatabaseFailures.IsDatabaseFailure(e))
        {
            // The database does not answer: the gauge keeps its last value (or is left out).
            _logger.LogDebug(e, "Counting active tokens failed; the gauge keeps its last value");
        }
        finally
        {
            _activeTokensLock.Release();
        }
    }
}
