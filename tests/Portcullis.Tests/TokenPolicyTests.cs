using System.Net;
using System.Net.Http.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>Token policies (docs/token-policies.md): a use limit holds exactly, under concurrency, on every path.</summary>
public sealed class TokenPolicyTests(SqliteServer server) : IClassFixture<SqliteServer>
{
    [Fact]
    public async Task ATokenWithAUseLimitWorksExactlyThatManyTimesUnderConcurrencyThenIsSpent()
    {
        var admin = await server.AdminTokenAsync();
        using var client = server.Client(admin);
        var created = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "bootstrap-" + Guid.NewGuid().ToString("N")[..6], max_uses = 5, expires_in_days = 1 });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var body = await created.JsonAsync();
        Assert.Equal(5, body.GetProperty("max_uses").GetInt64());
        var token = body.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        var id = body.GetProperty("id").GetInt64();

        // Introspection reports it without using it.
        for (var i = 0; i < 3; i++)
        {
            using var introspected = await server.PostFormAsync("/auth/introspect", [new("token", token)], new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", admin));
            Assert.True((await introspected.JsonAsync()).GetProperty("active").GetBoolean());
        }

        // 30 requests at once, through the API: exactly 5 are accepted.
        using var asToken = server.Client(token);
        var answers = await Task.WhenAll(Enumerable.Range(0, 30).Select(_ => asToken.GetAsync("/api/v1/me")));
        Assert.Equal(5, answers.Count(a => a.StatusCode == HttpStatusCode.OK));
        var refused = answers.First(a => a.StatusCode == HttpStatusCode.Unauthorized);
        Assert.Contains("used as many times as it allows", refused.Headers.WwwAuthenticate.ToString());

        var shown = await (await client.GetAsync($"/api/v1/tokens/{id}")).JsonAsync();
        Assert.Equal("spent", shown.GetProperty("status").GetString());
        Assert.Equal(5, shown.GetProperty("uses").GetInt64());
        using var inactive = await server.PostFormAsync("/auth/introspect", [new("token", token)], new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", admin));
        Assert.False((await inactive.JsonAsync()).GetProperty("active").GetBoolean());
        Assert.Equal(HttpStatusCode.Conflict, (await client.PostAsJsonAsync($"/api/v1/tokens/{id}/rotate", new { })).StatusCode);
    }

    [Fact]
    public async Task RotatingCarriesOverOnlyTheUsesLeftAndBadLimitsAreRefused()
    {
        var admin = await server.AdminTokenAsync();
        using var client = server.Client(admin);
        var body = await (await client.PostAsJsonAsync("/api/v1/tokens", new { name = "limited-" + Guid.NewGuid().ToString("N")[..6], max_uses = 3 })).JsonAsync();
        var token = body.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);
        var rotated = await (await client.PostAsJsonAsync($"/api/v1/tokens/{body.GetProperty("id").GetInt64()}/rotate", new { })).JsonAsync();
        PortcullisServer.Secrets.Add(rotated.GetProperty("token").GetString()!);
        Assert.Equal(2, rotated.GetProperty("max_uses").GetInt64());

        foreach (var bad in new object[] { new { name = "x", max_uses = 0 }, new { name = "x", max_uses = -1 }, new { name = "x", max_uses = 2_000_000_000 } })
        {
            var answer = await client.PostAsJsonAsync("/api/v1/tokens", bad);
            Assert.Equal(HttpStatusCode.BadRequest, answer.StatusCode);
            Assert.Contains("max_uses", await answer.Content.ReadAsStringAsync());
        }
    }
}

/// <summary>Two instances on one PostgreSQL database: a use limit holds exactly across them.</summary>
public sealed class TokenPolicyMultiInstanceTests(PostgresServer a) : IClassFixture<PostgresServer>, IAsyncLifetime
{
    private PortcullisServer _b = null!;

    public async Task InitializeAsync()
    {
        _b = await a.StartSecondInstanceAsync();
    }

    public async Task DisposeAsync() => await _b.DisposeAsync();

    [Fact]
    public async Task RequestsSpreadOverTwoInstancesGetExactlyTheUsesAllowed()
    {
        using var admin = a.Client(await a.AdminTokenAsync());
        var body = await (await admin.PostAsJsonAsync("/api/v1/tokens", new { name = "job-" + Guid.NewGuid().ToString("N")[..6], max_uses = 7 })).JsonAsync();
        var token = body.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        using var onA = a.Client(token);
        using var onB = _b.Client(token);
        var answers = await Task.WhenAll(Enumerable.Range(0, 40).Select(i => (i % 2 == 0 ? onA : onB).GetAsync("/api/v1/me")));
        Assert.Equal(7, answers.Count(r => r.StatusCode == HttpStatusCode.OK));
        Assert.All(answers.Where(r => r.StatusCode != HttpStatusCode.OK), r => Assert.Equal(HttpStatusCode.Unauthorized, r.StatusCode));
        var shown = await (await admin.GetAsync($"/api/v1/tokens/{body.GetProperty("id").GetInt64()}")).JsonAsync();
        Assert.Equal(7, shown.GetProperty("uses").GetInt64());
        Assert.Equal("spent", shown.GetProperty("status").GetString());
    }
}
