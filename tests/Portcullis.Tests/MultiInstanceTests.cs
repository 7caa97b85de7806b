using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>docs/decisions.md: two instances on one PostgreSQL database see each other's revocations at once.</summary>
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

/// <summary>docs/gateway.md on two instances of one PostgreSQL database: registry changes and service-origin sessions.</summary>
public sealed class GatewayMultiInstanceTests(PostgresServer a) : IClassFixture<PostgresServer>
{
    private static async Task<TimeSpan> UntilAsync(Func<Task<bool>> condition)
    {
        var watch = Stopwatch.StartNew();
        while (!await condition() && watch.Elapsed < TimeSpan.FromSeconds(5))
            await Task.Delay(20);
        return watch.Elapsed;
    }

    [Fact]
    public async Task ServicesAndServiceOriginSessionsReachTheOtherInstanceAtOnce()
    {
        await using var upstream = await TestUpstream.StartAsync();
        await using var b = PortcullisServer.With(Provider.Postgres,
            new() { ["Database:Provider"] = "postgres", ["Database:ConnectionString"] = a.ConnectionString! });
        await b.InitializeAsync();
        using var adminOnA = a.Client(await a.AdminTokenAsync());
        using var adminOnB = b.Client(await a.AdminTokenAsync());

        // B has answered through its gateway once (a cold first request is not what is measured here).
        Assert.Equal(HttpStatusCode.NotFound, (await adminOnB.GetAsync("/services/shared_1/x")).StatusCode);
        // Within 2 s: each probe is itself a request through B's gateway, slow on a loaded CI machine; a stale
        // registry would stay stale for minutes.
        var created = await adminOnA.PostAsJsonAsync("/api/v1/services", new { name = "shared", version = "1", upstreams = new[] { upstream.Url + "/echo", upstream.Url + "/echo" } });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var elapsed = await UntilAsync(async () => (await adminOnB.GetAsync("/services/shared_1/x")).StatusCode == HttpStatusCode.OK);
        Assert.True(elapsed < TimeSpan.FromSeconds(2), $"B did not know the new service after {elapsed.TotalMilliseconds} ms");

        // A code made on A is redeemed on B (the state cookie goes with the host, whatever the port).
        var (username, password, _) = await a.CreateUserAsync();
        using var browser = new Browser(a.BaseAddress);
        await browser.LogInAsync(username, password);
        using var start = await browser.GetAsync($"http://shared.localhost:{a.BaseAddress.Port}/x");
        using var code = await browser.GetAsync(start.Headers.Location!.PathAndQuery);
        var onB = new UriBuilder(code.Headers.Location!) { Port = b.BaseAddress.Port }.Uri;
        using var landed = await browser.GetAsync(onB.ToString());
        Assert.Equal(HttpStatusCode.Found, landed.StatusCode);
        var origin = $"http://shared.localhost:{b.BaseAddress.Port}/x";
        Assert.Equal(username, (await TestUpstream.EchoAsync(await browser.GetAsync(origin))).GetProperty("headers").GetProperty("x-portcullis-user").GetString());

        // Logging out on A ends the origin's session on B.
        var home = await (await browser.GetAsync("/")).Content.ReadAsStringAsync();
        using (var logout = await browser.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/logout") { Content = new FormUrlEncodedContent([new("csrf_token", Browser.CsrfToken(home))]) }))
            Assert.Equal(HttpStatusCode.SeeOther, logout.StatusCode);
        elapsed = await UntilAsync(async () => (await browser.GetAsync(origin)).StatusCode == HttpStatusCode.Found);
        Assert.True(elapsed < TimeSpan.FromSeconds(1), $"B still served the ended session after {elapsed.TotalMilliseconds} ms");

        Assert.Equal(HttpStatusCode.NoContent, (await adminOnA.DeleteAsync("/api/v1/services/shared_1")).StatusCode);
        elapsed = await UntilAsync(async () => (await adminOnB.GetAsync("/services/shared_1/x")).StatusCode == HttpStatusCode.NotFound);
        Assert.True(elapsed < TimeSpan.FromSeconds(2), $"B still forwarded to the removed service after {elapsed.TotalMilliseconds} ms");
    }

    [Fact]
    public async Task AWebSocketOnOneInstanceEndsWhenItsTokenIsRevokedOnTheOther()
    {
        await using var upstream = await TestUpstream.StartAsync();
        await using var b = PortcullisServer.With(Provider.Postgres,
            new() { ["Database:Provider"] = "postgres", ["Database:ConnectionString"] = a.ConnectionString! });
        await b.InitializeAsync();
        using var adminOnA = a.Client(await a.AdminTokenAsync());
        Assert.Equal(HttpStatusCode.Created, (await adminOnA.PostAsJsonAsync("/api/v1/services", new { name = "sockets", version = "1", upstream = upstream.Url })).StatusCode);
        await UntilAsync(async () => (await b.Client(await a.AdminTokenAsync()).GetAsync("/services/sockets_1/echo")).StatusCode == HttpStatusCode.OK);

        var (_, _, token) = await a.CreateUserAsync();
        var id = (await (await a.Client(token).GetAsync("/api/v1/me")).JsonAsync()).GetProperty("auth").GetProperty("token_id").GetString();
        using var socket = new System.Net.WebSockets.ClientWebSocket();
        socket.Options.SetRequestHeader("Authorization", "Bearer " + token);
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{b.BaseAddress.Port}/services/sockets_1/ws"), CancellationToken.None);

        Assert.Equal(HttpStatusCode.NoContent, (await a.Client(token).DeleteAsync($"/api/v1/tokens/{id}")).StatusCode);
        var revokedAt = Stopwatch.StartNew();
        var buffer = new byte[64];
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            await socket.ReceiveAsync(buffer, limit.Token);
        }
        catch (System.Net.WebSockets.WebSocketException)
        {
        }
        Assert.False(limit.IsCancellationRequested, "the WebSocket on B stayed open after the token was revoked on A");
        Assert.True(revokedAt.Elapsed < TimeSpan.FromSeconds(1.5), $"it closed {revokedAt.Elapsed.TotalMilliseconds} ms after the revocation");
    }
}
