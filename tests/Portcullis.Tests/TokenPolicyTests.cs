using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
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

    [Fact]
    public async Task ATokenNarrowedOnOneInstanceLosesTheRestOnTheOtherAtOnce()
    {
        using var admin = a.Client(await a.AdminTokenAsync());
        var body = await (await admin.PostAsJsonAsync("/api/v1/tokens", new { name = "wide-" + Guid.NewGuid().ToString("N")[..6] })).JsonAsync();
        var token = body.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        using var onB = _b.Client(token);
        Assert.Equal(HttpStatusCode.OK, (await onB.GetAsync("/api/v1/tokens")).StatusCode);  // now in B's cache
        var narrowed = await admin.PostAsJsonAsync($"/api/v1/tokens/{body.GetProperty("id").GetInt64()}/narrow", new { scopes = new[] { "services" } });
        Assert.Equal(HttpStatusCode.OK, narrowed.StatusCode);
        // B hears of it over PostgreSQL's notifications: within a second, as a revocation.
        var since = System.Diagnostics.Stopwatch.StartNew();
        while ((await onB.GetAsync("/api/v1/tokens")).StatusCode != HttpStatusCode.Forbidden)
        {
            Assert.True(since.Elapsed < TimeSpan.FromSeconds(1), $"B still let the narrowed token use the API after {since.ElapsedMilliseconds} ms");
            await Task.Delay(20);
        }
    }
}

/// <summary>
/// Allowed source addresses (docs/token-policies.md): a token works only from its ranges, the client's address being
/// the one trusted proxies report; every other use is refused with 403 and audited.
/// </summary>
public sealed class TokenSourceTests(SqliteServer server, GatewayFixture untrusted) : IClassFixture<SqliteServer>, IClassFixture<GatewayFixture>
{
    private static async Task<(long Id, string Token, JsonElement Body)> CreateAsync(PortcullisServer server, HttpClient client, params string[] ranges)
    {
        var created = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "from-" + Guid.NewGuid().ToString("N")[..6], allowed_cidrs = ranges });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var body = await created.JsonAsync();
        var token = body.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        return (body.GetProperty("id").GetInt64(), token, body);
    }

    private static async Task<HttpResponseMessage> GetAsync(PortcullisServer server, string path, string token, string? forwardedFor = null)
    {
        using var client = server.Client(token);
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        if (forwardedFor is not null)
            request.Headers.TryAddWithoutValidation("X-Forwarded-For", forwardedFor);
        return await client.SendAsync(request);
    }

    private static string[] Ranges(JsonElement body) => [.. body.GetProperty("allowed_cidrs").EnumerateArray().Select(r => r.GetString()!)];

    [Fact]
    public async Task ATokenWorksOnlyFromItsRangesAsTheTrustedProxyReportsThemAndEachRefusalIsAudited()
    {
        var admin = await server.AdminTokenAsync();
        using var client = server.Client(admin);
        var (id, token, body) = await CreateAsync(server, client, "203.0.113.0/24", " 2001:DB8::/32", "198.51.100.7", "203.0.113.0/24");
        Assert.Equal(["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"], Ranges(body));

        // Loopback is a trusted proxy by default: the address it reports is the client's.
        foreach (var from in new[] { "203.0.113.9", "2001:db8::5", "198.51.100.7", "203.0.113.9, 127.0.0.5" })
            Assert.Equal(HttpStatusCode.OK, (await GetAsync(server, "/api/v1/me", token, from)).StatusCode);
        // Forward-auth, the other path a token takes, decides the same.
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(server, "/auth/verify", token, "203.0.113.9")).StatusCode);

        // Elsewhere: 403 naming the address. What a client wrote further left in the header is not believed.
        foreach (var (from, seen) in new[] { ((string?)null, "127.0.0.1"), ("192.0.2.1", "192.0.2.1"), ("203.0.113.9, 192.0.2.77", "192.0.2.77"), ("2001:db9::1", "2001:db9::1") })
        {
            using var refused = await GetAsync(server, "/api/v1/me", token, from);
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.Contains($"may not be used from {seen}", await refused.Content.ReadAsStringAsync());
        }
        using (var refused = await GetAsync(server, "/auth/verify", token, "192.0.2.1"))
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        var denied = await LoginThrottleTests.ReadAuditAsync(server, e => e.Event == "token.denied_source" && e.ClientIp == "192.0.2.77", atLeast: 1);
        Assert.Single(denied);

        // Shown with the token, reported by introspection, kept by rotation; a refused request was not a use.
        var shown = await (await client.GetAsync($"/api/v1/tokens/{id}")).JsonAsync();
        Assert.Equal(["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"], Ranges(shown));
        using var introspected = await server.PostFormAsync("/auth/introspect", [new("token", token)], new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", admin));
        Assert.Equal(["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"], Ranges(await introspected.JsonAsync()));
        var rotated = await (await client.PostAsJsonAsync($"/api/v1/tokens/{id}/rotate", new { })).JsonAsync();
        PortcullisServer.Secrets.Add(rotated.GetProperty("token").GetString()!);
        Assert.Equal(Ranges(shown), Ranges(rotated));
        Assert.Equal(HttpStatusCode.Forbidden, (await GetAsync(server, "/api/v1/me", rotated.GetProperty("token").GetString()!)).StatusCode);
    }

    [Fact]
    public async Task ALimitedTokenMakesOnlyTokensAsLimitedAndBadRangesAreRefusedWithTheFix()
    {
        var (_, _, person) = await server.CreateUserAsync();
        using var client = server.Client(person);
        var (_, limited, _) = await CreateAsync(server, client, "203.0.113.0/24");

        // Made through the limited token (from inside its range): the new token inherits the ranges, or narrows them.
        using var asLimited = server.Client(limited);
        asLimited.DefaultRequestHeaders.TryAddWithoutValidation("X-Forwarded-For", "203.0.113.9");
        var inherited = await (await asLimited.PostAsJsonAsync("/api/v1/tokens", new { name = "child-" + Guid.NewGuid().ToString("N")[..6] })).JsonAsync();
        PortcullisServer.Secrets.Add(inherited.GetProperty("token").GetString()!);
        Assert.Equal(["203.0.113.0/24"], Ranges(inherited));
        var narrower = await asLimited.PostAsJsonAsync("/api/v1/tokens", new { name = "narrow-" + Guid.NewGuid().ToString("N")[..6], allowed_cidrs = new[] { "203.0.113.128/25" } });
        Assert.Equal(HttpStatusCode.Created, narrower.StatusCode);
        PortcullisServer.Secrets.Add((await narrower.JsonAsync()).GetProperty("token").GetString()!);
        var wider = await asLimited.PostAsJsonAsync("/api/v1/tokens", new { name = "wide-" + Guid.NewGuid().ToString("N")[..6], allowed_cidrs = new[] { "0.0.0.0/0" } });
        Assert.Equal(HttpStatusCode.Forbidden, wider.StatusCode);
        Assert.Contains("203.0.113.0/24", await wider.Content.ReadAsStringAsync());

        foreach (var (bad, says) in new[]
        {
            (Array.Empty<string>(), "at least one range"), (["10.0.0.1/8"], "written 10.0.0.0/8"), (["nonsense"], "not an address range"),
            (["10.0.0.0/33"], "not an address range"), (["fe80::1%eth0"], "not an address range"),
            (Enumerable.Range(0, 101).Select(i => $"10.0.{i}.0/24").ToArray(), "at most 100"),
        })
        {
            var answer = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "bad", allowed_cidrs = bad });
            Assert.True(answer.StatusCode == HttpStatusCode.BadRequest, $"{string.Join(' ', bad.Take(2))}: {answer.StatusCode}");
            var problem = await answer.JsonAsync();
            Assert.Contains(says, problem.GetProperty("errors").GetProperty("allowed_cidrs")[0].GetString());
        }
    }

    [Fact]
    public async Task AFencedAdminTokenMakesNoCredentialThatWouldEscapeItsRanges()
    {
        using var admin = server.Client(await server.AdminTokenAsync());
        var created = await (await admin.PostAsJsonAsync("/api/v1/tokens",
            new { name = "fenced-" + Guid.NewGuid().ToString("N")[..6], scopes = new[] { "api", "admin" }, allowed_cidrs = new[] { "127.0.0.0/8" } })).JsonAsync();
        var fenced = created.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(fenced);
        using var asFenced = server.Client(fenced);
        foreach (var (path, body) in new (string, object)[]
        {
            ("/api/v1/clients", new { name = "escape", scopes = new[] { "api" } }),
            ("/api/v1/users", new { username = "mallory-" + Guid.NewGuid().ToString("N")[..6], password = "a-long-enough-password-1", admin = true }),
            ("/api/v1/me/password", new { current_password = PortcullisServer.AdminPassword, new_password = "another-long-password-2" }),
        })
        {
            using var refused = await asFenced.PostAsJsonAsync(path, body);
            Assert.True(refused.StatusCode == HttpStatusCode.Forbidden, $"{path}: {refused.StatusCode}");
            Assert.Contains("could not carry those limits", await refused.Content.ReadAsStringAsync());
        }
        using var patched = await asFenced.PatchAsJsonAsync("/api/v1/users/admin", new { password = "another-long-password-3" });
        Assert.Equal(HttpStatusCode.Forbidden, patched.StatusCode);
        // An API token it makes takes its ranges, and so is allowed.
        var child = await asFenced.PostAsJsonAsync("/api/v1/tokens", new { name = "child-" + Guid.NewGuid().ToString("N")[..6] });
        Assert.Equal(HttpStatusCode.Created, child.StatusCode);
        var body2 = await child.JsonAsync();
        PortcullisServer.Secrets.Add(body2.GetProperty("token").GetString()!);
        Assert.Equal(["127.0.0.0/8"], Ranges(body2));
    }

    [Fact]
    public async Task AnUntrustedPeerCannotClaimAnAddressAndTheGatewayDecidesTheSame()
    {
        // That server trusts only 192.0.2.1: the loopback peer's X-Forwarded-For is nobody's word.
        var (_, _, person) = await untrusted.Server.CreateUserAsync();
        using var client = untrusted.Server.Client(person);
        var (_, elsewhere, _) = await CreateAsync(untrusted.Server, client, "203.0.113.0/24");
        using (var refused = await GetAsync(untrusted.Server, "/services/echo_1/", elsewhere, "203.0.113.9"))
        {
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.Contains("may not be used from 127.0.0.1", await refused.Content.ReadAsStringAsync());
        }
        var (_, here, _) = await CreateAsync(untrusted.Server, client, "127.0.0.0/8");
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(untrusted.Server, "/services/echo_1/", here, "203.0.113.9")).StatusCode);
    }
}

/// <summary>
/// Rate limits (docs/token-policies.md): a token bucket per token and limit; over it 429 with Retry-After and the
/// RateLimit-Policy/RateLimit fields, on the API, the gateway and forward-auth; a refused request is not a use.
/// </summary>
public sealed class TokenRateLimitTests(SqliteServer server, GatewayFixture gateway) : IClassFixture<SqliteServer>, IClassFixture<GatewayFixture>
{
    private static async Task<(long Id, string Token)> CreateAsync(HttpClient client, object rateLimit, long? maxUses = null)
    {
        var created = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "paced-" + Guid.NewGuid().ToString("N")[..6], rate_limit = rateLimit, max_uses = maxUses });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var body = await created.JsonAsync();
        var token = body.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        return (body.GetProperty("id").GetInt64(), token);
    }

    [Fact]
    public async Task APerMinuteLimitHoldsExactlyUnderConcurrencyAndTheRefusalSaysWhenToComeBack()
    {
        using var admin = server.Client(await server.AdminTokenAsync());
        var (id, token) = await CreateAsync(admin, new { per_minute = 7 }, maxUses: 100);
        using var asToken = server.Client(token);
        var answers = await Task.WhenAll(Enumerable.Range(0, 30).Select(_ => asToken.GetAsync("/api/v1/me")));
        Assert.Equal(7, answers.Count(a => a.StatusCode == HttpStatusCode.OK));
        Assert.All(answers.Where(a => a.StatusCode != HttpStatusCode.OK), a => Assert.Equal(HttpStatusCode.TooManyRequests, a.StatusCode));
        var refused = answers.First(a => a.StatusCode == HttpStatusCode.TooManyRequests);
        var wait = int.Parse(refused.Headers.GetValues("Retry-After").Single(), System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(wait, 1, 60);
        Assert.Equal("\"per-minute\";q=7;w=60", refused.Headers.GetValues("RateLimit-Policy").Single());
        Assert.Equal($"\"per-minute\";r=0;t={wait}", refused.Headers.GetValues("RateLimit").Single());
        Assert.Contains("allows 7 requests per minute", await refused.Content.ReadAsStringAsync());
        // Introspection reports it, for a resource server that checks tokens itself.
        using var introspected = await server.PostFormAsync("/auth/introspect", [new("token", token)],
            new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", await server.AdminTokenAsync()));
        Assert.Equal(7, (await introspected.JsonAsync()).GetProperty("rate_limit").GetProperty("per_minute").GetInt64());

        // The 23 refused requests were not uses; the limits are shown with the token and kept by rotation.
        var shown = await (await admin.GetAsync($"/api/v1/tokens/{id}")).JsonAsync();
        Assert.Equal(7, shown.GetProperty("uses").GetInt64());
        Assert.Equal(7, shown.GetProperty("rate_limit").GetProperty("per_minute").GetInt64());
        var rotated = await (await admin.PostAsJsonAsync($"/api/v1/tokens/{id}/rotate", new { })).JsonAsync();
        PortcullisServer.Secrets.Add(rotated.GetProperty("token").GetString()!);
        Assert.Equal(7, rotated.GetProperty("rate_limit").GetProperty("per_minute").GetInt64());
    }

    [Fact]
    public async Task APerSecondLimitRefillsEverySecond()
    {
        using var admin = server.Client(await server.AdminTokenAsync());
        var (_, token) = await CreateAsync(admin, new { per_second = 3, per_minute = 100 });
        using var asToken = server.Client(token);
        // A burst: the bucket holds 3; at most one refill can fall inside it.
        var burst = await Task.WhenAll(Enumerable.Range(0, 12).Select(_ => asToken.GetAsync("/api/v1/me")));
        Assert.InRange(burst.Count(a => a.StatusCode == HttpStatusCode.OK), 3, 6);
        var refused = burst.First(a => a.StatusCode == HttpStatusCode.TooManyRequests);
        Assert.Equal("1", refused.Headers.GetValues("Retry-After").Single());
        Assert.Equal("\"per-second\";q=3;w=1, \"per-minute\";q=100;w=60", refused.Headers.GetValues("RateLimit-Policy").Single());
        await Task.Delay(TimeSpan.FromSeconds(1.2));
        Assert.Equal(HttpStatusCode.OK, (await asToken.GetAsync("/api/v1/me")).StatusCode);
    }

    [Fact]
    public async Task TheGatewayAndForwardAuthRefuseATokenOverItsLimitToo()
    {
        var (_, _, person) = await gateway.Server.CreateUserAsync();
        using var client = gateway.Server.Client(person);
        var (_, token) = await CreateAsync(client, new { per_minute = 2 });
        using var asToken = gateway.Server.Client(token);
        Assert.Equal(HttpStatusCode.OK, (await asToken.GetAsync("/services/echo_1/")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await asToken.GetAsync("/auth/verify?service=echo")).StatusCode);
        foreach (var path in new[] { "/services/echo_1/", "/auth/verify?service=echo", "/api/v1/me" })
        {
            using var refused = await asToken.GetAsync(path);
            Assert.True(refused.StatusCode == HttpStatusCode.TooManyRequests, $"{path}: {refused.StatusCode}");
            Assert.True(refused.Headers.Contains("Retry-After"), path);
            Assert.True(refused.Headers.Contains("RateLimit"), path);
        }
    }

    [Fact]
    public async Task ALimitedTokenMakesNoTokensItsRotationDrawsFromTheSameBucketsAndBadLimitsAreRefused()
    {
        var (_, _, person) = await server.CreateUserAsync();
        using var client = server.Client(person);
        var (id, paced) = await CreateAsync(client, new { per_minute = 3 });
        using var asPaced = server.Client(paced);
        // Every token it made would have buckets of its own.
        using (var refused = await asPaced.PostAsJsonAsync("/api/v1/tokens", new { name = "child-" + Guid.NewGuid().ToString("N")[..6] }))
        {
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.Contains("rate of their own", await refused.Content.ReadAsStringAsync());
        }
        Assert.Equal(HttpStatusCode.OK, (await asPaced.GetAsync("/api/v1/tokens")).StatusCode);
        // Two of its three used (with the refusal above): the successor has none left this minute.
        var rotated = await (await client.PostAsJsonAsync($"/api/v1/tokens/{id}/rotate", new { })).JsonAsync();
        var successor = rotated.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(successor);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(successor).GetAsync("/api/v1/tokens")).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await server.Client(successor).GetAsync("/api/v1/tokens")).StatusCode);

        foreach (var bad in new object[] { new { }, new { per_second = 0 }, new { per_second = 100_001 }, new { per_minute = -1 }, new { per_minute = 6_000_001 } })
        {
            using var answer = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "bad", rate_limit = bad });
            Assert.Equal(HttpStatusCode.BadRequest, answer.StatusCode);
            Assert.Contains("rate_limit", (await answer.JsonAsync()).GetProperty("errors").EnumerateObject().Single().Name);
        }
    }
}

/// <summary>
/// Two instances on one PostgreSQL database: a rate limit holds exactly on each instance, so behind two a token gets
/// exactly twice its limit (docs/token-policies.md).
/// </summary>
public sealed class TokenRateLimitMultiInstanceTests(PostgresServer a) : IClassFixture<PostgresServer>, IAsyncLifetime
{
    private PortcullisServer _b = null!;

    public async Task InitializeAsync() => _b = await a.StartSecondInstanceAsync();

    public async Task DisposeAsync() => await _b.DisposeAsync();

    [Fact]
    public async Task EachInstanceLetsThroughExactlyTheLimit()
    {
        using var admin = a.Client(await a.AdminTokenAsync());
        var body = await (await admin.PostAsJsonAsync("/api/v1/tokens", new { name = "paced-" + Guid.NewGuid().ToString("N")[..6], rate_limit = new { per_minute = 6 } })).JsonAsync();
        var token = body.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        using var onA = a.Client(token);
        using var onB = _b.Client(token);
        var answers = await Task.WhenAll(Enumerable.Range(0, 40).Select(i => (i % 2 == 0 ? onA : onB).GetAsync("/api/v1/me")));
        Assert.Equal(6, answers.Where((_, i) => i % 2 == 0).Count(r => r.StatusCode == HttpStatusCode.OK));
        Assert.Equal(6, answers.Where((_, i) => i % 2 == 1).Count(r => r.StatusCode == HttpStatusCode.OK));
        Assert.All(answers.Where(r => r.StatusCode != HttpStatusCode.OK), r => Assert.Equal(HttpStatusCode.TooManyRequests, r.StatusCode));
    }
}

/// <summary>
/// Narrowing (docs/token-policies.md): what a token's requests relied on is recorded, suggested, and the token taken
/// down to it at once; never wider; audited.
/// </summary>
public sealed class TokenNarrowingTests(GatewayFixture gateway) : IClassFixture<GatewayFixture>
{
    private PortcullisServer Server => gateway.Server;

    /// <summary>The suggestion, once the usage write-behind has written what is expected.</summary>
    private static async Task<JsonElement> SuggestionAsync(HttpClient owner, long id, Func<JsonElement, bool> ready)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            var suggestion = await (await owner.GetAsync($"/api/v1/tokens/{id}/suggested-scopes")).JsonAsync();
            if (ready(suggestion) || DateTime.UtcNow > deadline)
                return suggestion;
            await Task.Delay(100);
        }
    }

    [Fact]
    public async Task ATokenThatOnlyReachedOneServiceIsNarrowedToItAndLosesTheRestAtOnce()
    {
        var (_, _, person) = await Server.CreateUserAsync();
        using var owner = Server.Client(person);
        var created = await (await owner.PostAsJsonAsync("/api/v1/tokens", new { name = "broad-" + Guid.NewGuid().ToString("N")[..6] })).JsonAsync();
        var token = created.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        var id = created.GetProperty("id").GetInt64();
        using var asToken = Server.Client(token);
        for (var i = 0; i < 3; i++)
            Assert.Equal(HttpStatusCode.OK, (await asToken.GetAsync("/services/echo_1/page")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await asToken.GetAsync("/auth/verify?service=echo")).StatusCode);

        var suggestion = await SuggestionAsync(owner, id, s => s.GetProperty("used").GetArrayLength() > 0 && s.GetProperty("used")[0].GetProperty("requests").GetInt64() == 4);
        Assert.Equal(["api", "services"], suggestion.GetProperty("scopes").EnumerateArray().Select(s => s.GetString()));
        var used = Assert.Single(suggestion.GetProperty("used").EnumerateArray());
        Assert.Equal("services:echo", used.GetProperty("scope").GetString());
        Assert.Equal(4, used.GetProperty("requests").GetInt64());
        Assert.Equal(["services:echo"], suggestion.GetProperty("suggested").EnumerateArray().Select(s => s.GetString()));
        Assert.True(suggestion.GetProperty("narrower").GetBoolean());

        // Never wider, and never to nothing.
        Assert.Equal(HttpStatusCode.BadRequest, (await owner.PostAsJsonAsync($"/api/v1/tokens/{id}/narrow", new { scopes = new[] { "admin" } })).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await owner.PostAsJsonAsync($"/api/v1/tokens/{id}/narrow", new { scopes = Array.Empty<string>() })).StatusCode);

        var narrowed = await owner.PostAsJsonAsync($"/api/v1/tokens/{id}/narrow", new { });
        Assert.Equal(HttpStatusCode.OK, narrowed.StatusCode);
        Assert.Equal(["services:echo"], (await narrowed.JsonAsync()).GetProperty("scopes").EnumerateArray().Select(s => s.GetString()));
        Assert.Equal(HttpStatusCode.OK, (await asToken.GetAsync("/services/echo_1/page")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await asToken.GetAsync("/services/secret_1/page")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await asToken.GetAsync("/api/v1/tokens")).StatusCode);
        var audited = await LoginThrottleTests.ReadAuditAsync(Server, e => e.Event == "token.narrowed", atLeast: 1);
        Assert.NotEmpty(audited);

        // Asked again, it is as narrow as what it used.
        Assert.False((await (await owner.GetAsync($"/api/v1/tokens/{id}/suggested-scopes")).JsonAsync()).GetProperty("narrower").GetBoolean());
    }

    [Fact]
    public async Task WhatATokenMintsCountsAsUsedAndMadeUpServiceNamesCountAsServices()
    {
        var (_, _, person) = await Server.CreateUserAsync();
        using var owner = Server.Client(person);
        var created = await (await owner.PostAsJsonAsync("/api/v1/tokens", new { name = "minter-" + Guid.NewGuid().ToString("N")[..6] })).JsonAsync();
        var token = created.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        var id = created.GetProperty("id").GetInt64();
        using var asToken = Server.Client(token);
        var child = await (await asToken.PostAsJsonAsync("/api/v1/tokens", new { name = "child-" + Guid.NewGuid().ToString("N")[..6], scopes = new[] { "services:echo" } })).JsonAsync();
        PortcullisServer.Secrets.Add(child.GetProperty("token").GetString()!);
        for (var i = 0; i < 3; i++)
            Assert.Equal(HttpStatusCode.OK, (await asToken.GetAsync($"/auth/verify?service=made-up-{i}")).StatusCode);

        var suggestion = await SuggestionAsync(owner, id, s => s.GetProperty("used").GetArrayLength() >= 3);
        Assert.Equal(["api", "services", "services:echo"], suggestion.GetProperty("used").EnumerateArray().Select(u => u.GetProperty("scope").GetString()));
        Assert.Equal(["api", "services"], suggestion.GetProperty("suggested").EnumerateArray().Select(s => s.GetString()));
        Assert.False(suggestion.GetProperty("narrower").GetBoolean());
    }

    [Fact]
    public async Task AnUnusedTokenHasNothingToBeNarrowedToAndAnotherUsersTokenIsNotFound()
    {
        var (_, _, person) = await Server.CreateUserAsync();
        using var owner = Server.Client(person);
        var created = await (await owner.PostAsJsonAsync("/api/v1/tokens", new { name = "idle-" + Guid.NewGuid().ToString("N")[..6] })).JsonAsync();
        PortcullisServer.Secrets.Add(created.GetProperty("token").GetString()!);
        var id = created.GetProperty("id").GetInt64();
        var suggestion = await (await owner.GetAsync($"/api/v1/tokens/{id}/suggested-scopes")).JsonAsync();
        Assert.Equal(0, suggestion.GetProperty("used").GetArrayLength());
        Assert.False(suggestion.GetProperty("narrower").GetBoolean());
        using var refused = await owner.PostAsJsonAsync($"/api/v1/tokens/{id}/narrow", new { });
        Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
        Assert.Contains("was not used in the last 30 days", await refused.Content.ReadAsStringAsync());

        var (_, _, stranger) = await Server.CreateUserAsync();
        Assert.Equal(HttpStatusCode.NotFound, (await Server.Client(stranger).GetAsync($"/api/v1/tokens/{id}/suggested-scopes")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Server.Client(stranger).PostAsJsonAsync($"/api/v1/tokens/{id}/narrow", new { scopes = new[] { "api" } })).StatusCode);
    }
}
