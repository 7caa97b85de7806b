using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.RegularExpressions;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>A server whose credential caches hold every database read for a while before storing it.</summary>
public sealed class HeldCachesSqliteServer() : PortcullisServer(Provider.Sqlite, CacheRaceTests.Hold());

/// <summary>The same on PostgreSQL, with a second instance on its database that makes the changes.</summary>
public sealed class HeldCachesPostgresPair : IAsyncLifetime
{
    public HeldCachesPostgresServer Held { get; } = new();
    public PortcullisServer Other { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        await Held.InitializeAsync();
        Other = PortcullisServer.With(Provider.Postgres, new() { ["Database:Provider"] = "postgres", ["Database:ConnectionString"] = Held.ConnectionString! });
        await Other.InitializeAsync();
        await WarmAsync();
    }

    /// <summary>
    /// Makes each kind of change the tests make once, so that inside a test's window the other instance answers at its
    /// usual speed: a cold instance's first revocation took longer than the window on a loaded machine.
    /// </summary>
    private async Task WarmAsync()
    {
        // The same admin token as the tests: both instances share one database, and the admin's test token is made once.
        var adminToken = await Held.AdminTokenAsync();
        using var admin = Other.Client(adminToken);
        using var created = await admin.PostAsJsonAsync("/api/v1/tokens", new { name = "warm-up" });
        var token = await created.EnsureSuccessStatusCode().JsonAsync();
        PortcullisServer.Secrets.Add(token.GetProperty("token").GetString()!);
        (await admin.DeleteAsync($"/api/v1/tokens/{token.GetProperty("id")}")).EnsureSuccessStatusCode();
        var (username, _, _) = await Held.CreateUserAsync();
        (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { disabled = true })).EnsureSuccessStatusCode();
        var client = await Held.CreateClientAsync(adminToken, ["api"]);
        using var rotated = await admin.PostAsync($"/api/v1/clients/{client.ClientId}/rotate-secret", null);
        PortcullisServer.Secrets.Add((await rotated.EnsureSuccessStatusCode().JsonAsync()).GetProperty("client_secret").GetString()!);
    }

    public async Task DisposeAsync()
    {
        await Other.DisposeAsync();
        await Held.DisposeAsync();
    }
}

public sealed class HeldCachesPostgresServer() : PortcullisServer(Provider.Postgres, CacheRaceTests.Hold());

/// <summary>
/// docs/decisions.md, the credential caches: a database read that a revocation overtakes is never stored. The
/// server holds each read for <see cref="Delay"/> before storing it (<c>Testing:CacheStoreDelay</c>, which logs
/// when it holds one); the test lands the change inside that window, lets the held request finish, and then the
/// credential must be refused. Without the generation guard the stale read would stay cached for ten minutes.
/// </summary>
public abstract class CacheRaceTests(PortcullisServer held, PortcullisServer changer)
{
    private static readonly TimeSpan Delay = TimeSpan.FromSeconds(1.5);

    internal static Dictionary<string, string> Hold() => new() { ["Testing:CacheStoreDelay"] = Delay.ToString() };

    private int Holds(string cache) => Regex.Matches(held.Output, $"holds a {cache} read").Count;

    /// <summary>
    /// Starts <paramref name="use"/>, waits until its read of <paramref name="cache"/> is held, lands
    /// <paramref name="change"/> in that window (checked: the request is still under way afterwards) and lets it finish.
    /// </summary>
    private async Task RaceAsync(string cache, Func<Task<HttpResponseMessage>> use, Func<Task> change)
    {
        var before = Holds(cache);
        var first = use();
        var watch = Stopwatch.StartNew();
        while (Holds(cache) == before)
        {
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(15), $"the {cache} read was never held");
            await Task.Delay(10);
        }
        await change();
        Assert.False(first.IsCompleted, $"the change did not land while the {cache} read was held");
        (await first).Dispose();
    }

    [Fact]
    public async Task ATokenRevokedWhileItsReadIsHeldIsRefusedAfterwards()
    {
        var (username, password, _) = await held.CreateUserAsync();
        // A token nobody has used yet, so its first use reads the database.
        using var created = await held.Client(await held.LoginAsync(username, password)).PostAsJsonAsync("/api/v1/tokens", new { name = "raced" });
        var body = await created.JsonAsync();
        var token = body.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        using var user = held.Client(token);
        using var admin = changer.Client(await held.AdminTokenAsync());
        await RaceAsync("tokens", () => user.GetAsync("/api/v1/me"), async () =>
            Assert.Equal(HttpStatusCode.NoContent, (await admin.DeleteAsync($"/api/v1/tokens/{body.GetProperty("id")}")).StatusCode));
        Assert.Equal(HttpStatusCode.Unauthorized, (await user.GetAsync("/api/v1/me")).StatusCode);
    }

    [Fact]
    public async Task AUserDisabledWhileTheirReadIsHeldIsRefusedAfterwards()
    {
        var (username, token) = await UnseenUserAsync(admin: false);
        using var user = held.Client(token);
        using var admin = changer.Client(await held.AdminTokenAsync());
        await RaceAsync("principals", () => user.GetAsync("/api/v1/me"), async () =>
            Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { disabled = true })).StatusCode));
        Assert.Equal(HttpStatusCode.Unauthorized, (await user.GetAsync("/api/v1/me")).StatusCode);
    }

    [Fact]
    public async Task AnAdminDemotedWhileTheirReadIsHeldLosesAdminRightsAfterwards()
    {
        var (username, token) = await UnseenUserAsync(admin: true);
        using var user = held.Client(token);
        using var admin = changer.Client(await held.AdminTokenAsync());
        await RaceAsync("principals", () => user.GetAsync("/api/v1/users"), async () =>
            Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { admin = false })).StatusCode));
        Assert.Equal(HttpStatusCode.Forbidden, (await user.GetAsync("/api/v1/users")).StatusCode);
    }

    [Fact]
    public async Task AClientSecretRotatedWhileItsReadIsHeldIsRefusedAfterwards()
    {
        var client = await held.CreateClientAsync(await held.AdminTokenAsync(), ["api"]);
        using var admin = changer.Client(await held.AdminTokenAsync());
        await RaceAsync("clients", () => held.ClientCredentialsAsync(client), async () =>
        {
            using var rotated = await admin.PostAsync($"/api/v1/clients/{client.ClientId}/rotate-secret", null);
            Assert.Equal(HttpStatusCode.OK, rotated.StatusCode);
            PortcullisServer.Secrets.Add((await rotated.JsonAsync()).GetProperty("client_secret").GetString()!);
        });
        using var refused = await held.ClientCredentialsAsync(client);
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
    }

    /// <summary>A user and a token of theirs made by the admin, so that nothing has read the user into a cache yet.</summary>
    private async Task<(string Username, string Token)> UnseenUserAsync(bool admin)
    {
        var username = "user-" + Guid.NewGuid().ToString("N")[..10];
        var adminToken = await held.AdminTokenAsync();
        using var created = await held.Client(adminToken).PostAsJsonAsync("/api/v1/users", new { username, password = "pw-" + Guid.NewGuid().ToString("N"), admin });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        return (username, await held.CreateTokenAsync(adminToken, new { name = "raced", owner = username, scopes = admin ? new[] { "api", "admin" } : new[] { "api" } }));
    }

    /// <summary>A web session logged out (on the changing instance) while its read is held.</summary>
    protected async Task ASessionLoggedOutWhileItsReadIsHeldIsRefusedAfterwards()
    {
        var (username, password, _) = await held.CreateUserAsync();
        using var browser = new Browser(held.BaseAddress);
        Assert.Equal(HttpStatusCode.SeeOther, (await browser.LogInAsync(username, password)).StatusCode);
        var cookie = "portcullis=" + browser.Cookies.GetCookies(held.BaseAddress)["portcullis"]!.Value;
        using var api = held.Client();
        Task<HttpResponseMessage> Me()
        {
            var request = new HttpRequestMessage(HttpMethod.Get, "/api/v1/me");
            request.Headers.Add("Cookie", cookie);
            return api.SendAsync(request);
        }
        // The logout form is fetched first, so that only the logout itself has to fit in the window (a loaded
        // machine took longer than the window for both, the first page render included).
        var other = new Uri(changer.BaseAddress, "/logout");
        var csrf = Browser.CsrfToken(await (await browser.GetAsync(other.ToString())).Content.ReadAsStringAsync());
        await RaceAsync("sessions", Me, async () =>
        {
            using var logout = new HttpRequestMessage(HttpMethod.Post, other) { Content = new FormUrlEncodedContent([new("csrf_token", csrf)]) };
            Assert.Equal(HttpStatusCode.SeeOther, (await browser.SendAsync(logout)).StatusCode);
        });
        using var replayed = await Me();
        Assert.Equal(HttpStatusCode.Unauthorized, replayed.StatusCode);
    }
}

public sealed class SqliteCacheRaceTests(HeldCachesSqliteServer server) : CacheRaceTests(server, server), IClassFixture<HeldCachesSqliteServer>;

/// <summary>On PostgreSQL the change is made on another instance and reaches the held one by notification.</summary>
public sealed class PostgresCacheRaceTests(HeldCachesPostgresPair pair) : CacheRaceTests(pair.Held, pair.Other), IClassFixture<HeldCachesPostgresPair>
{
    /// <summary>
    /// Only across instances: on one instance the logout's own read of the session is held just as long, so it
    /// cannot land inside the other request's window.
    /// </summary>
    [Fact]
    public Task ALoggedOutSessionIsRefusedAfterwards() => ASessionLoggedOutWhileItsReadIsHeldIsRefusedAfterwards();
}
