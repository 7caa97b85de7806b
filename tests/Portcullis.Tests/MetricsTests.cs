using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text.RegularExpressions;
using Portcullis.Security;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>docs/configuration.md / <c>/metrics</c> in the Prometheus text format, with what operators watch.</summary>
public sealed class MetricsTests(SqliteServer server) : IClassFixture<SqliteServer>
{
    [Fact]
    public async Task MetricsCountRequestsVerificationsCacheActiveTokensAndLoginFailures()
    {
        var token = await server.AdminTokenAsync();
        for (var i = 0; i < 3; i++)
            Assert.Equal(HttpStatusCode.OK, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(new TokenFormat("pc").Generate(TokenKind.Personal)).GetAsync("/api/v1/me")).StatusCode);
        using (var client = server.Client())
            Assert.Equal(HttpStatusCode.BadRequest, (await client.PostAsJsonAsync("/auth/token", new { username = "admin", password = "wrong-password-x" })).StatusCode);

        using var response = await server.Client().GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType!.ToString());
        var text = await response.Content.ReadAsStringAsync();

        Assert.True(Value(text, "portcullis_http_requests_total{route=\"/api/v1/me\",status=\"200\"}") >= 3, text);
        Assert.True(Value(text, "portcullis_http_requests_total{route=\"/api/v1/me\",status=\"401\"}") >= 1, text);
        Assert.True(Value(text, "portcullis_credential_verifications_total{outcome=\"valid\"}") >= 3, text);
        Assert.True(Value(text, "portcullis_credential_verifications_total{outcome=\"unknown\"}") >= 1, text);
        Assert.True(Value(text, "portcullis_token_cache_lookups_total{result=\"hit\"}") >= 2, text);
        Assert.InRange(Value(text, "portcullis_token_cache_hit_ratio"), 0.01, 1);
        Assert.True(Value(text, "portcullis_active_tokens") >= 1, text);
        Assert.True(Value(text, "portcullis_login_failures_total") >= 1, text);
        // Every sample line has a HELP and TYPE for its metric, and no raw path or secret is a label.
        foreach (var name in Regex.Matches(text, @"^(portcullis_[a-z_]+)", RegexOptions.Multiline).Select(m => m.Groups[1].Value).Distinct())
            Assert.Contains($"# TYPE {name} ", text);
        Assert.DoesNotContain(token, text);
    }

    private static double Value(string text, string series)
    {
        // An unlabelled series may be written "name{} value" (OpenTelemetry's exporter does) or "name value".
        var line = text.Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal) || l.StartsWith(series + "{} ", StringComparison.Ordinal));
        Assert.True(line is not null, $"no sample for {series} in:\n{text}");
        return double.Parse(line![(line.IndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
    }
}

/// <summary>A server whose metrics are on an address of their own and need a token (Metrics:ListenUrl, Metrics:BearerToken).</summary>
public sealed class ProtectedMetricsServer() : PortcullisServer(Provider.Sqlite, new()
{
    ["Metrics:BearerToken"] = MetricsToken,
    ["Metrics:ListenUrl"] = $"http://127.0.0.1:{MetricsPort}",
})
{
    public const string MetricsToken = "metrics-token-for-the-tests-0123456789abcdef";
    public static readonly int MetricsPort = FreePort();
}

/// <summary>docs/configuration.md, "Metrics": /metrics kept from the public address and from callers without the token.</summary>
public sealed class ProtectedMetricsTests(ProtectedMetricsServer server) : IClassFixture<ProtectedMetricsServer>
{
    [Fact]
    public async Task MetricsAreServedOnlyOnTheirOwnAddressAndOnlyWithTheToken()
    {
        Assert.Equal(HttpStatusCode.NotFound, (await server.Client().GetAsync("/metrics")).StatusCode);
        using var metrics = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{ProtectedMetricsServer.MetricsPort}") };
        using (var anonymous = await metrics.GetAsync("/metrics"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
            Assert.Contains("Bearer", anonymous.Headers.WwwAuthenticate.ToString());
        }
        using (var wrong = new HttpRequestMessage(HttpMethod.Get, "/metrics"))
        {
            wrong.Headers.Authorization = new("Bearer", ProtectedMetricsServer.MetricsToken + "x");
            Assert.Equal(HttpStatusCode.Unauthorized, (await metrics.SendAsync(wrong)).StatusCode);
        }
        using (var right = new HttpRequestMessage(HttpMethod.Get, "/metrics"))
        {
            right.Headers.Authorization = new("Bearer", ProtectedMetricsServer.MetricsToken);
            using var response = await metrics.SendAsync(right);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Contains("portcullis_http_requests_total", await response.Content.ReadAsStringAsync());
        }
        // The metrics address serves the probes and nothing else.
        Assert.Equal(HttpStatusCode.OK, (await metrics.GetAsync("/healthz")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await metrics.GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await metrics.GetAsync("/login")).StatusCode);
    }
}
