using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text.RegularExpressions;
using Portcullis.Security;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>SPEC §3 / issue 8: <c>/metrics</c> in the Prometheus text format, with what operators watch.</summary>
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
        var line = text.Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal));
        Assert.True(line is not null, $"no sample for {series} in:\n{text}");
        return double.Parse(line![(series.Length + 1)..], CultureInfo.InvariantCulture);
    }
}
