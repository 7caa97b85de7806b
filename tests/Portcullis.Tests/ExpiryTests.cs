using System.Net;
using System.Net.Http.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>Expiry at the exact instant, with an advanceable clock in an in-process server.</summary>
public sealed class ExpiryTests(InProcessServer server) : IClassFixture<InProcessServer>
{
    private async Task<string> AdminJwtAsync()
    {
        using var client = server.Client();
        var response = await client.PostAsJsonAsync("/auth/token/cli", new { username = "admin", password = PortcullisServer.AdminPassword });
        return (await response.JsonAsync()).GetProperty("access_token").GetString()!;
    }

    [Fact]
    public async Task ApiTokenIsAcceptedOneSecondBeforeExpiryAndRejectedAtExpiry()
    {
        using var admin = server.Client(await AdminJwtAsync());
        var created = await (await admin.PostAsJsonAsync("/api/v1/tokens", new { name = "short-lived", expires_in_days = 1 })).JsonAsync();
        var token = created.GetProperty("token").GetString()!;
        var expiresAt = created.GetProperty("expires_at").GetDateTimeOffset();
        using var client = server.Client(token);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/v1/me")).StatusCode);

        server.Clock.Set(expiresAt.AddSeconds(-1));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/v1/me")).StatusCode);

        server.Clock.Set(expiresAt);
        using var expired = await client.GetAsync("/api/v1/me");
        Assert.Equal(HttpStatusCode.Unauthorized, expired.StatusCode);
        Assert.Contains("error=\"invalid_token\"", expired.Header("WWW-Authenticate"));
        Assert.Contains("expired", expired.Header("WWW-Authenticate"));
        var list = await (await server.Client(await AdminJwtAsync()).GetAsync("/api/v1/tokens")).JsonAsync();
        Assert.Equal("expired", list.EnumerateArray().Single(t => t.GetProperty("name").GetString() == "short-lived").GetProperty("status").GetString());
    }

    [Fact]
    public async Task ARotatedTokenWorksUntilTheLastSecondOfItsGraceAndNotAtItsEnd()
    {
        using var admin = server.Client(await AdminJwtAsync());
        var created = await (await admin.PostAsJsonAsync("/api/v1/tokens", new { name = "graceful-" + Guid.NewGuid().ToString("N")[..6] })).JsonAsync();
        var old = created.GetProperty("token").GetString()!;
        using var rotated = await admin.PostAsJsonAsync($"/api/v1/tokens/{created.GetProperty("id").GetInt64()}/rotate", new { grace_seconds = 600 });
        Assert.Equal(HttpStatusCode.OK, rotated.StatusCode);
        var successor = (await rotated.JsonAsync()).GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(successor);
        var graceEnds = server.Clock.GetUtcNow().AddSeconds(600);
        using var client = server.Client(old);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/v1/me")).StatusCode);

        server.Clock.Set(graceEnds.AddSeconds(-1));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/v1/me")).StatusCode);
        server.Clock.Set(graceEnds.AddSeconds(1));
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(successor).GetAsync("/api/v1/me")).StatusCode);
    }

    [Fact]
    public async Task ExpiresAtDateMeansTheEndOfThatUtcDay()
    {
        using var admin = server.Client(await AdminJwtAsync());
        var day = server.Clock.GetUtcNow().UtcDateTime.Date.AddDays(3);
        var created = await (await admin.PostAsJsonAsync("/api/v1/tokens", new { name = "dated-" + Guid.NewGuid().ToString("N")[..6], expires_at = day.ToString("yyyy-MM-dd") })).JsonAsync();
        Assert.Equal(day.AddDays(1), created.GetProperty("expires_at").GetDateTime());
    }

    [Fact]
    public async Task AccessTokenLifetimesAreOneHourAndSevenDaysAndExpireOnTime()
    {
        using var client = server.Client();
        var api = await (await client.PostAsJsonAsync("/auth/token", new { username = "admin", password = PortcullisServer.AdminPassword })).JsonAsync();
        var cli = await (await client.PostAsJsonAsync("/auth/token/cli", new { username = "admin", password = PortcullisServer.AdminPassword })).JsonAsync();
        Assert.Equal(3600, api.GetProperty("expires_in").GetInt32());
        Assert.Equal(7 * 24 * 3600, cli.GetProperty("expires_in").GetInt32());
        Assert.Equal("Bearer", api.GetProperty("token_type").GetString());
        Assert.Equal("api services admin", api.GetProperty("scope").GetString());

        var jwt = api.GetProperty("access_token").GetString()!;
        var start = server.Clock.GetUtcNow();
        server.Clock.Set(start.AddSeconds(3599));
        Assert.Equal(HttpStatusCode.OK, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);
        // Beyond expiry plus the 30 s clock-skew allowance, it is refused.
        server.Clock.Set(start.AddSeconds(3600 + 31));
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);
    }

    [Fact]
    public async Task ScopeParameterNarrowsThePasswordGrant()
    {
        using var client = server.Client();
        var response = await client.PostAsync("/auth/token", new FormUrlEncodedContent([
            new("grant_type", "password"), new("username", "admin"), new("password", PortcullisServer.AdminPassword), new("scope", "services")]));
        var body = await response.JsonAsync();
        Assert.Equal("services", body.GetProperty("scope").GetString());
        var jwt = body.GetProperty("access_token").GetString()!;
        Assert.Equal(HttpStatusCode.Forbidden, (await server.Client(jwt).GetAsync("/api/v1/tokens")).StatusCode);
    }
}
