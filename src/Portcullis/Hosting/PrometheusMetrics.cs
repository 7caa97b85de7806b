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
internal sealed class PrometheusMetrics(TokenCache cache, PasswordHasher passwords)
{
    private long _loginsThrottled;

    private readonly ConcurrentDictionary<(string Route, int Status), long> _requests = new();
    private readonly ConcurrentDictionary<string, long> _verifications = new(StringComparer.Ordinal);

    public void CountRequest(string route, int status) => _requests.AddOrUpdate((route, status), 1, static (_, n) => n + 1);

    public void CountLoginThrottled() => Interlocked.Increment(ref _loginsThrottled);

    public void CountVerification(VerifyFailure outcome) => _verifications.AddOrUpdate(OutcomeNames[(int)outcome], 1, static (_, n) => n + 1);

    private static readonly string[] OutcomeNames = Enum.GetNames<VerifyFailure>()
        .Select(n => n == nameof(VerifyFailure.None) ? "valid" : System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(n)).ToArray();

    public string Render()
    {
        var sb = new StringBuilder();
        sb.AppendLine("# HELP portcullis_http_requests_total HTTP requests by route pattern and status code.");
        sb.AppendLine("# TYPE portcullis_http_requests_total counter");
        foreach (var ((route, status), n) in _requests.OrderBy(x => x.Key.Route, StringComparer.Ordinal).ThenBy(x => x.Key.Status))
            sb.Append(CultureInfo.InvariantCulture, $"portcullis_http_requests_total{{route=\"{Escape(route)}\",status=\"{status}\"}} {n}\n");
        sb.AppendLine("# HELP portcullis_credential_verifications_total Credential checks by outcome.");
        sb.AppendLine("# TYPE portcullis_credential_verifications_total counter");
        foreach (var (outcome, n) in _verifications.OrderBy(x => x.Key, StringComparer.Ordinal))
            sb.Append(CultureInfo.InvariantCulture, $"portcullis_credential_verifications_total{{outcome=\"{outcome}\"}} {n}\n");
        sb.AppendLine("# HELP portcullis_token_cache_lookups_total Token cache lookups by result.");
        sb.AppendLine("# TYPE portcullis_token_cache_lookups_total counter");
        sb.Append(CultureInfo.InvariantCulture, $"portcullis_token_cache_lookups_total{{result=\"hit\"}} {cache.Hits}\n");
        sb.Append(CultureInfo.InvariantCulture, $"portcullis_token_cache_lookups_total{{result=\"miss\"}} {cache.Misses}\n");
        sb.AppendLine("# HELP portcullis_token_cache_entries Entries in the token cache.");
        sb.AppendLine("# TYPE portcullis_token_cache_entries gauge");
        sb.Append(CultureInfo.InvariantCulture, $"portcullis_token_cache_entries {cache.Count}\n");
        sb.AppendLine("# HELP portcullis_password_checks_total Password checks run, including the dummy checks for unknown users.");
        sb.AppendLine("# TYPE portcullis_password_checks_total counter");
        sb.Append(CultureInfo.InvariantCulture, $"portcullis_password_checks_total {passwords.Checks}\n");
        sb.AppendLine("# HELP portcullis_logins_throttled_total Password and client-secret checks refused because of too many failures.");
        sb.AppendLine("# TYPE portcullis_logins_throttled_total counter");
        sb.Append(CultureInfo.InvariantCulture, $"portcullis_logins_throttled_total {Interlocked.Read(ref _loginsThrottled)}\n");
        return sb.ToString();
    }

    private static string Escape(string s) => s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal);
}
