using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>SPEC §6: two instances on one PostgreSQL database see each other's revocations at once.</summary>
public sealed class MultiInstanceTests(PostgresServer a) : IClassFixture<PostgresServer>
{
    [Fact]
    public async Task RevocationOnOneInstanceTakesEffectOnTheOther()
    {
        await using var b = PortcullisServer.With(Provider.Postgres,
            new() { ["Database:Provider"] = "postgres", ["Database:ConnectionString"] = a.ConnectionString! });
        await b.InitializeAsync();

        var (username, _, token) = await a.CreateUserAsync();
        using var onB = b.Client(token);
        Assert.Equal(HttpStatusCode.OK, (await onB.GetAsync("/api/v1/me")).StatusCode); // now cached on B

        var id = (await (await a.Client(token).GetAsync("/api/v1/me")).JsonAsync()).GetProperty("auth").GetProperty("token_id").GetString();
        Assert.Equal(HttpStatusCode.NoContent, (await a.Client(token).DeleteAsync($"/api/v1/tokens/{id}")).StatusCode);
        var elapsed = await onB.UntilUnauthorizedAsync();
        Assert.True(elapsed < TimeSpan.FromSeconds(1), $"B still accepted the revoked token after {elapsed.TotalMilliseconds} ms");

        // Disabling a user on A stops their other tokens on B too.
        var second = await a.CreateTokenAsync(await a.AdminTokenAsync(), new { name = "second", owner = username });
        using var secondOnB = b.Client(second);
        Assert.Equal(HttpStatusCode.OK, (await secondOnB.GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await a.Client(await a.AdminTokenAsync()).PatchAsJsonAsync($"/api/v1/users/{username}", new { disabled = true })).StatusCode);
        elapsed = await secondOnB.UntilUnauthorizedAsync();
        Assert.True(elapsed < TimeSpan.FromSeconds(1), $"B still accepted a disabled user's token after {elapsed.TotalMilliseconds} ms");
    }
}
