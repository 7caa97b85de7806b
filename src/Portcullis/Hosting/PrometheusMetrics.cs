using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Portcullis.Auth;
using Portcullis.Security;
using Portcullis.Tokens;

namespace Portcullis.Hosting;

/// <summary>
/// Counters exposed at <c>/metrics</c> in the Prometheus text format. OpenTelemetry exporters are not
/// in the package registry here, and a handful of counters do not need them.
/// </summary>
internal sealed class PrometheusMetrics(TokenCache cache, PasswordHasher passwords, Audit.AuditLog audit, IServiceScopeFactory scopes, TimeProvider time)
{
    /// <summary>Counting active tokens scans an index; once per this interval is enough for a gauge.</summary>
    private static readonly TimeSpan ActiveTokensRefresh = TimeSpan.FromSeconds(15);

    private long _activeTokens = -1;
    private long _activeTokensAtTicks = long.MinValue / 2;
    private readonly SemaphoreSlim _activeTokensLock = new(1, 1);

    private long _loginsThrottled;

    private readonly ConcurrentDictionary<(string Route, int Status), long> _requests = new();
    private readonly ConcurrentDictionary<string, long> _verifications = new(StringComparer.Ordinal);

    public void CountRequest(string route, int status) => _requests.AddOrUpdate((route, status), 1, static (_, n) => n + 1);

    private static readonly double[] UpstreamBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
    private readonly ConcurrentDictionary<string, long[]> _upstream = new(StringComparer.Ordinal);

    /// <summary>How long an upstream took to answer with its headers (or to fail), by service.</summary>
    public void ObserveUpstream(string service, TimeSpan elapsed)
    {
        // One bucket per observation (made cumulative when rendered), then the count and the sum in
        // microseconds: three atomic additions per request instead of one per bucket.
        var counts = _upstream.GetOrAdd(service, _ => new long[UpstreamBuckets.Length + 2]);
        var seconds = elapsed.TotalSeconds;
        var bucket = 0;
        while (bucket < UpstreamBuckets.Length && seconds > UpstreamBuckets[bucket])
            bucket++;
        if (bucket < UpstreamBuckets.Length)
            Interlocked.Increment(ref counts[bucket]);
        Interlocked.Increment(ref counts[UpstreamBuckets.Length]);
        Interlocked.Add(ref counts[UpstreamBuckets.Length + 1], (long)(seconds * 1_000_000));
    }

    public void CountLoginThrottled() => Interlocked.Increment(ref _loginsThrottled);

    public void CountVerification(VerifyFailure outcome) => _verifications.AddOrUpdate(OutcomeNames[(int)outcome], 1, static (_, n) => n + 1);

    private static readonly string[] OutcomeNames = Enum.GetNames<VerifyFailure>()
        .Select(n => n == nameof(VerifyFailure.None) ? "valid" : System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(n)).ToArray();

    /// <summary>Renders every metric; the active-token gauge is read from the database at most every 15 s.</summary>
    public async Task<string> RenderAsync(CancellationToken cancellationToken)
    {
        await RefreshActiveTokensAsync(cancellationToken);
        return Render();
    }

    private async Task RefreshActiveTokensAsync(CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow();
        if (now.UtcTicks - Interlocked.Read(ref _activeTokensAtTicks) < ActiveTokensRefresh.Ticks || !await _activeTokensLock.WaitAsync(0, cancellationToken))
            return;
        try
        {
            await using var scope = scopes.CreateAsyncScope();
            var db = scope.ServiceProvider.GetRequiredService<Data.PortcullisDb>();
            await Microsoft.EntityFrameworkCore.RelationalDatabaseFacadeExtensions.OpenConnectionAsync(db.Database, cancellationToken);
            var connection = Microsoft.EntityFrameworkCore.RelationalDatabaseFacadeExtensions.GetDbConnection(db.Database);
            var count = await Data.Sql.ScalarAsync(connection,
                "SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > @now)", cancellationToken, ("@now", now.UtcDateTime));
            Interlocked.Exchange(ref _activeTokens, Convert.ToInt64(count, CultureInfo.InvariantCulture));
            Interlocked.Exchange(ref _activeTokensAtTicks, now.UtcTicks);
        }
        catch (Exception e) when (Data.DatabaseFailures.IsDatabaseFailure(e))
        {
            // The database does not answer: the gauge keeps its last value (or is left out).
        }
        finally
        {
            _activeTokensLock.Release();
        }
    }

    /// <summary>
    /// The dictionaries are snapshotted with their own <c>ToArray</c> before sorting: LINQ's copy reads the count, then
    /// copies, and a request counted in between made it throw (found by the fuzz test).
    /// </summary>
    public string Render()
    {
        var sb = new StringBuilder();
        if (Interlocked.Read(ref _activeTokens) is var active and >= 0)
            Single(sb, "portcullis_active_tokens", "gauge", "API and service tokens neither revoked nor expired (refreshed every 15 s).", active);
        Single(sb, "portcullis_login_failures_total", "counter", "Failed password and client-secret checks, on every path.", audit.LoginFailures);
        Single(sb, "portcullis_audit_events_lost_total", "counter", "Audit events that could not be queued or written (zero unless something is wrong; each is also logged).", audit.Lost);
        var lookups = cache.Hits + cache.Misses;
        Single(sb, "portcullis_token_cache_hit_ratio", "gauge", "Token cache hits over lookups since start.", lookups == 0 ? 0 : Math.Round((double)cache.Hits / lookups, 4));

        Header(sb, "portcullis_http_requests_total", "counter", "HTTP requests by route pattern and status code.");
        foreach (var ((route, status), n) in _requests.ToArray().OrderBy(x => x.Key.Route, StringComparer.Ordinal).ThenBy(x => x.Key.Status))
            sb.Append(CultureInfo.InvariantCulture, $"portcullis_http_requests_total{{route=\"{Escape(route)}\",status=\"{status}\"}} {n}\n");
        Header(sb, "portcullis_credential_verifications_total", "counter", "Credential checks by outcome.");
        foreach (var (outcome, n) in _verifications.ToArray().OrderBy(x => x.Key, StringComparer.Ordinal))
            sb.Append(CultureInfo.InvariantCulture, $"portcullis_credential_verifications_total{{outcome=\"{outcome}\"}} {n}\n");
        Header(sb, "portcullis_token_cache_lookups_total", "counter", "Token cache lookups by result.");
        sb.Append(CultureInfo.InvariantCulture, $"portcullis_token_cache_lookups_total{{result=\"hit\"}} {cache.Hits}\n");
        sb.Append(CultureInfo.InvariantCulture, $"portcullis_token_cache_lookups_total{{result=\"miss\"}} {cache.Misses}\n");
        Header(sb, "portcullis_upstream_request_duration_seconds", "histogram", "Time until a gateway upstream answered with its headers (or failed), by service.");
        foreach (var (service, counts) in _upstream.ToArray().OrderBy(x => x.Key, StringComparer.Ordinal))
        {
            var cumulative = 0L;
            for (var i = 0; i < UpstreamBuckets.Length; i++)
            {
                cumulative += Interlocked.Read(ref counts[i]);
                sb.Append(CultureInfo.InvariantCulture, $"portcullis_upstream_request_duration_seconds_bucket{{service=\"{Escape(service)}\",le=\"{UpstreamBuckets[i]}\"}} {cumulative}\n");
            }
            var count = Math.Max(cumulative, Interlocked.Read(ref counts[UpstreamBuckets.Length]));
            sb.Append(CultureInfo.InvariantCulture, $"portcullis_upstream_request_duration_seconds_bucket{{service=\"{Escape(service)}\",le=\"+Inf\"}} {count}\n");
            sb.Append(CultureInfo.InvariantCulture, $"portcullis_upstream_request_duration_seconds_sum{{service=\"{Escape(service)}\"}} {Interlocked.Read(ref counts[UpstreamBuckets.Length + 1]) / 1e6}\n");
            sb.Append(CultureInfo.InvariantCulture, $"portcullis_upstream_request_duration_seconds_count{{service=\"{Escape(service)}\"}} {count}\n");
        }
        Single(sb, "portcullis_token_cache_entries", "gauge", "Entries in the token cache.", cache.Count);
        Single(sb, "portcullis_password_checks_total", "counter", "Password checks run, including the dummy checks for unknown users.", passwords.Checks);
        Single(sb, "portcullis_logins_throttled_total", "counter", "Password and client-secret checks refused because of too many failures.", Interlocked.Read(ref _loginsThrottled));
        return sb.ToString();
    }

    private static void Header(StringBuilder sb, string name, string type, string help) =>
        sb.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} {type}\n");

    /// <summary>A metric with one unlabelled sample.</summary>
    private static void Single(StringBuilder sb, string name, string type, string help, double value)
    {
        Header(sb, name, type, help);
        sb.Append(CultureInfo.InvariantCulture, $"{name} {value}\n");
    }

    private static string Escape(string s) => s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal);
}
