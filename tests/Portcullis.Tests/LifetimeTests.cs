using System.Net;
using System.Net.Http.Json;
using System.Text.RegularExpressions;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

public sealed class LimitedLifetimeServer() : PortcullisServer(Provider.Sqlite, new()
{
    ["Tokens:DefaultLifetimeDays"] = "7",
    ["Tokens:MaxLifetimeDays"] = "30",
});

/// <summary>docs/decisions.md: Tokens:DefaultLifetimeDays and Tokens:MaxLifetimeDays.</summary>
public sealed class LifetimeTests(LimitedLifetimeServer server) : IClassFixture<LimitedLifetimeServer>
{
    [Fact]
    public async Task DefaultLifetimeAppliesAndTheMaximumIsEnforced()
    {
        using var client = server.Client(await server.AdminTokenAsync());
        var created = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "defaulted" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var body = await created.JsonAsync();
        PortcullisServer.Secrets.Add(body.GetProperty("token").GetString()!);
        Assert.Equal(TimeSpan.FromDays(7), body.GetProperty("expires_at").GetDateTime() - body.GetProperty("created_at").GetDateTime());

        Assert.Equal(HttpStatusCode.Created, (await client.PostAsJsonAsync("/api/v1/tokens", new { name = "max", expires_in_days = 30 })).StatusCode);
        var tooLong = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "too-long", expires_in_days = 31 });
        Assert.Equal(HttpStatusCode.BadRequest, tooLong.StatusCode);
        Assert.Contains("30 days", await tooLong.Content.ReadAsStringAsync());
        var farDate = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "far", expires_at = DateTime.UtcNow.AddDays(60).ToString("yyyy-MM-dd") });
        Assert.Equal(HttpStatusCode.BadRequest, farDate.StatusCode);
    }

    [Fact]
    public async Task RotatingAnOldNeverExpiringTokenUnderAMaximumGivesASuccessorWithinIt()
    {
        // A token made before the maximum was configured...
        await using var before = new SqliteServer();
        await before.InitializeAsync();
        var old = await before.CreateTokenAsync(await before.AdminTokenAsync(), new { name = "from-before-the-cap" });
        var id = (await (await before.Client(old).GetAsync("/api/v1/me")).JsonAsync()).GetProperty("auth").GetProperty("token_id").GetString();
        await before.StopAsync();
        // ...rotated after: the successor lives at most Tokens:MaxLifetimeDays, like any token made today.
        await using var after = PortcullisServer.With(Provider.Sqlite, new() { ["DataDir"] = Path.Combine(before.DataDir, "data"), ["Tokens:MaxLifetimeDays"] = "30" });
        await after.InitializeAsync();
        using var rotated = await after.Client(await after.LoginAsync()).PostAsJsonAsync($"/api/v1/tokens/{id}/rotate", new { });
        Assert.Equal(HttpStatusCode.OK, rotated.StatusCode);
        var body = await rotated.JsonAsync();
        PortcullisServer.Secrets.Add(body.GetProperty("token").GetString()!);
        Assert.Equal(TimeSpan.FromDays(30), body.GetProperty("expires_at").GetDateTime() - body.GetProperty("created_at").GetDateTime());
    }

    [Fact]
    public async Task ATokenWithABadChecksumIsRejectedWithoutACacheOrDatabaseLookup()
    {
        var token = await server.AdminTokenAsync();
        var tampered = Tampering.LastCharacterChanged(token);
        using var client = server.Client();
        var before = Lookups(await client.GetStringAsync("/metrics"));
        for (var i = 0; i < 20; i++)
            Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(tampered).GetAsync("/api/v1/me")).StatusCode);
        var metrics = await client.GetStringAsync("/metrics");
        Assert.Equal(before, Lookups(metrics));
        Assert.Matches("portcullis_credential_verifications_total\\{outcome=\"malformed\"\\} [1-9]", metrics);
    }

    private static long Lookups(string metrics) =>
        Regex.Matches(metrics, "portcullis_token_cache_lookups_total\\{result=\"\\w+\"\\} (\\d+)").Sum(m => long.Parse(m.Groups[1].Value));
}
