using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using Portcullis.Security;
using Portcullis.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Portcullis.Tests;

/// <summary>
/// database outage: PostgreSQL stops under load. What needs the database answers 503 (never
/// 2xx for an unknown or revoked token, and a login is not "wrong password"); when PostgreSQL is back,
/// the server recovers by itself within 5 s, without a restart.
/// </summary>
public sealed class DatabaseOutageTests(ITestOutputHelper output)
{
    [Fact]
    public async Task AnOutageFailsClosedAndTheServerRecoversByItself()
    {
        await using var cluster = await PostgresCluster.StartAsync();
        await using var server = PortcullisServer.With(Provider.Postgres,
            new()
            {
                ["Database:Provider"] = "postgres", ["Database:ConnectionString"] = cluster.ConnectionString,
                ["Gateway:Services:0:Name"] = "app", ["Gateway:Services:0:Version"] = "1", ["Gateway:Services:0:Upstream"] = "http://127.0.0.1:9",
            });
        await server.InitializeAsync();
        await using var second = PortcullisServer.With(Provider.Postgres,
            new() { ["Database:Provider"] = "postgres", ["Database:ConnectionString"] = cluster.ConnectionString, ["PublicUrl"] = server.BaseAddress.ToString().TrimEnd('/') });
        await second.InitializeAsync();
        var admin = await server.AdminTokenAsync();
        var (username, password, valid) = await server.CreateUserAsync();
        var revoked = await server.CreateTokenAsync(admin, new { name = "to-revoke" });
        using (var client = server.Client(admin))
        {
            Assert.Equal(HttpStatusCode.OK, (await server.Client(valid).GetAsync("/api/v1/me")).StatusCode);
            var id = (await (await server.Client(revoked).GetAsync("/api/v1/me")).JsonAsync()).GetProperty("auth").GetProperty("token_id").GetString();
            Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/v1/tokens/{id}")).StatusCode);
        }
        var format = new TokenFormat("pc");

        await cluster.StopServerAsync();
        var statuses = new Dictionary<string, Dictionary<int, int>>();
        var watch = Stopwatch.StartNew();
        var rounds = 0;
        // Bounded: 3 s of requests, or 60 rounds.
        while (watch.Elapsed < TimeSpan.FromSeconds(3) && rounds++ < 60)
        {
            var unknown = format.Generate(TokenKind.Personal); // never seen: not in any cache
            Record("unknown token", await StatusAsync(server.Client(unknown), "/api/v1/me"));
            Record("revoked token", await StatusAsync(server.Client(revoked), "/api/v1/me"));
            Record("listing tokens", await StatusAsync(server.Client(admin), "/api/v1/tokens"));
            Record("gateway, unknown token", await StatusAsync(server.Client(format.Generate(TokenKind.Personal)), "/services/app_1/"));
            Record("forward-auth, unknown token", await StatusAsync(server.Client(format.Generate(TokenKind.Personal)), "/auth/verify?service=app"));
            Record("login", await LoginStatusAsync(server, username, password));
            Record("readyz", await StatusAsync(server.Client(), "/readyz"));
            Record("cached valid token", await StatusAsync(server.Client(valid), "/api/v1/me"));
        }
        foreach (var (what, counts) in statuses)
            output.WriteLine($"during the outage, {what}: " + string.Join(", ", counts.OrderBy(c => c.Key).Select(c => $"{c.Value}× {c.Key}")));

        Assert.Equal([503], statuses["unknown token"].Keys);
        Assert.All(statuses["revoked token"].Keys, s => Assert.True(s is 401 or 503, $"a revoked token got {s}"));
        Assert.Equal([503], statuses["listing tokens"].Keys);
        Assert.Equal([503], statuses["gateway, unknown token"].Keys);
        Assert.Equal([503], statuses["forward-auth, unknown token"].Keys);
        Assert.Equal([503], statuses["login"].Keys);
        Assert.Equal([503], statuses["readyz"].Keys);
        // A token verified just before the outage may go on working from the cache (docs/decisions.md); nothing else may.
        Assert.All(statuses["cached valid token"].Keys, s => Assert.True(s is 200 or 503, $"the cached valid token got {s}"));

        await cluster.StartServerAsync();
        watch.Restart();
        TimeSpan? recovered = null;
        while (watch.Elapsed < TimeSpan.FromSeconds(15))
        {
            if (await StatusAsync(server.Client(), "/readyz") == 200
                && await LoginStatusAsync(server, username, password) == 201
                && await StatusAsync(server.Client(format.Generate(TokenKind.Personal)), "/api/v1/me") == 401
                && await StatusAsync(server.Client(admin), "/api/v1/tokens") == 200)
            {
                recovered = watch.Elapsed;
                break;
            }
            await Task.Delay(50);
        }
        output.WriteLine($"recovered {recovered?.TotalMilliseconds:F0} ms after PostgreSQL was back");
        Assert.True(recovered is not null && recovered <= TimeSpan.FromSeconds(5), $"not recovered within 5 s (after {watch.Elapsed})");
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(revoked).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(valid).GetAsync("/api/v1/me")).StatusCode);

        // The second instance's LISTEN connection broke with the outage and came back by itself:
        // a revocation on the first instance reaches it again, fast.
        // (Past the listener's reconnect delay, so that what arrives is a notification, not the clean-up of a reconnect.)
        await Task.Delay(TimeSpan.FromSeconds(2.5));
        using var onSecond = second.Client(valid);
        Assert.Equal(HttpStatusCode.OK, (await onSecond.GetAsync("/api/v1/me")).StatusCode);
        var validId = (await (await server.Client(valid).GetAsync("/api/v1/me")).JsonAsync()).GetProperty("auth").GetProperty("token_id").GetString();
        // Timed from the revocation's acknowledgement (204), not from sending it: on a loaded machine the request itself
        // can take a good part of a second, which says nothing about how fast the other instance hears of it.
        Assert.Equal(HttpStatusCode.NoContent, (await server.Client(admin).DeleteAsync($"/api/v1/tokens/{validId}")).StatusCode);
        var elapsed = await onSecond.UntilUnauthorizedAsync();
        output.WriteLine($"after the outage, a revocation on the first instance reached the second in {elapsed.TotalMilliseconds:F0} ms");
        Assert.True(elapsed < TimeSpan.FromSeconds(1), $"the second instance still accepted the revoked token after {elapsed}");

        void Record(string what, int status)
        {
            var counts = statuses.TryGetValue(what, out var c) ? c : statuses[what] = [];
            counts[status] = counts.GetValueOrDefault(status) + 1;
        }
    }

    private static async Task<int> StatusAsync(HttpClient client, string path)
    {
        using (client)
        {
            client.Timeout = TimeSpan.FromSeconds(20);
            using var response = await client.GetAsync(path);
            return (int)response.StatusCode;
        }
    }

    private static async Task<int> LoginStatusAsync(PortcullisServer server, string username, string password)
    {
        using var client = server.Client();
        using var response = await client.PostAsJsonAsync("/auth/token", new { username, password });
        return (int)response.StatusCode;
    }
}
