using System.Net;
using System.Net.Http.Json;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

// Small limits keep the slow password hashes few. The per-user and per-address limits are tested
// on separate servers, since every test connects from the same loopback address.
public sealed class UserThrottledSqliteServer() : PortcullisServer(Provider.Sqlite, LoginThrottleTests.PerUserSettings());

public sealed class UserThrottledPostgresServer() : PortcullisServer(Provider.Postgres, LoginThrottleTests.PerUserSettings());

public sealed class AddressThrottledSqliteServer() : PortcullisServer(Provider.Sqlite, AddressThrottleTests.PerAddressSettings());

public sealed class AddressThrottledPostgresServer() : PortcullisServer(Provider.Postgres, AddressThrottleTests.PerAddressSettings());

/// <summary>docs/decisions.md: failed logins are throttled per user, the same on every password path, without revealing who exists.</summary>
public abstract class LoginThrottleTests(PortcullisServer server)
{
    public const int Limit = 3;
    private const string WrongPassword = "wrong-password-x";

    public static Dictionary<string, string> PerUserSettings() => new()
    {
        ["Auth:MaxFailedLoginsPerUser"] = Limit.ToString(),
        ["Auth:MaxFailedLoginsPerAddress"] = "0",
        ["Auth:MaxConcurrentPasswordHashes"] = "4",
    };

    [Fact]
    public async Task WrongPasswordsUpToTheLimitThenTooManyRequestsWithRetryAfter()
    {
        var (username, password, _) = await server.CreateUserAsync();
        for (var i = 0; i < Limit; i++)
        {
            using var wrong = await LoginAsync(username, WrongPassword);
            Assert.Equal(HttpStatusCode.BadRequest, wrong.StatusCode);
            Assert.Equal("invalid_grant", (await wrong.JsonAsync()).GetProperty("error").GetString());
        }

        using var throttled = await LoginAsync(username, WrongPassword);
        Assert.Equal(HttpStatusCode.TooManyRequests, throttled.StatusCode);
        Assert.InRange(int.Parse(throttled.Header("Retry-After")), 1, 15 * 60);
        Assert.Contains("no-store", throttled.Header("Cache-Control"));
        var body = await throttled.JsonAsync();
        Assert.Equal("temporarily_unavailable", body.GetProperty("error").GetString());
        Assert.Contains("Try again in", body.GetProperty("error_description").GetString());

        // Locked means locked: the right password is not even checked.
        using var right = await LoginAsync(username, password);
        Assert.Equal(HttpStatusCode.TooManyRequests, right.StatusCode);

        // Two refusals, one audit event.
        var events = await AuditEventsAsync(e => e.Event == "login.throttled" && e.Subject == username, atLeast: 1);
        Assert.Single(events);
    }

    [Fact]
    public async Task RefusalsPastTheLimitAreAnsweredFromMemoryWithoutTheSharedCounter()
    {
        var (username, _, _) = await server.CreateUserAsync();
        for (var i = 0; i < Limit; i++)
            Assert.Equal(HttpStatusCode.BadRequest, (await LoginAsync(username, WrongPassword)).StatusCode);
        for (var i = 0; i < 20; i++)
            Assert.Equal(HttpStatusCode.TooManyRequests, (await LoginAsync(username, WrongPassword)).StatusCode);
        // The first refusal came from the database, which counted it; the other nineteen never reached it.
        Assert.Equal(1L, Convert.ToInt64(await server.ScalarAsync("SELECT refused FROM login_throttle WHERE kind = 'user' AND subject = @s", ("s", username))));
    }

    [Fact]
    public async Task AnUnknownUserIsAnsweredExactlyLikeAKnownOneAndThrottledAnswersCheckNoPassword()
    {
        var (known, _, _) = await server.CreateUserAsync();
        var unknown = "nobody-" + Guid.NewGuid().ToString("N")[..8];
        var checksBefore = await PasswordChecksAsync();
        for (var i = 0; i < Limit + 2; i++)
        {
            using var a = await LoginAsync(known, WrongPassword);
            using var b = await LoginAsync(unknown, WrongPassword);
            Assert.Equal(i < Limit ? HttpStatusCode.BadRequest : HttpStatusCode.TooManyRequests, a.StatusCode);
            Assert.Equal(a.StatusCode, b.StatusCode);
            Assert.Equal(a.Headers.Contains("Retry-After"), b.Headers.Contains("Retry-After"));
            // The seconds in the 429 text may tick between the two answers; nothing else may differ.
            Assert.Equal(WithoutNumbers(await a.Content.ReadAsStringAsync()), WithoutNumbers(await b.Content.ReadAsStringAsync()));
        }
        // A hash (a dummy one for the unknown user) for every attempt under the limit, none for the refused ones.
        Assert.Equal(checksBefore + 2 * Limit, await PasswordChecksAsync());
    }

    [Fact]
    public async Task FiftyParallelWrongPasswordsGetNoMoreAttemptsThanTheLimit()
    {
        var (username, _, _) = await server.CreateUserAsync();
        var checksBefore = await PasswordChecksAsync();
        using var client = server.Client();
        var responses = await Task.WhenAll(Enumerable.Range(0, 50).Select(_ =>
            client.PostAsJsonAsync("/auth/token", new { username, password = WrongPassword })));
        var statuses = responses.Select(r => r.StatusCode).ToList();
        foreach (var r in responses)
            r.Dispose();

        var checkedAnswers = statuses.Count(s => s != HttpStatusCode.TooManyRequests);
        Assert.InRange(checkedAnswers, 1, Limit);
        Assert.All(statuses, s => Assert.True(s is HttpStatusCode.BadRequest or HttpStatusCode.TooManyRequests, $"unexpected {s}"));
        Assert.Equal(checksBefore + checkedAnswers, await PasswordChecksAsync());
    }

    [Fact]
    public async Task ALockedOutUserKeepsUsingTheirApiTokenAndJwt()
    {
        var (username, password, token) = await server.CreateUserAsync();
        var jwt = await server.LoginAsync(username, password);
        for (var i = 0; i <= Limit; i++)
            (await LoginAsync(username, WrongPassword)).Dispose();
        using (var locked = await LoginAsync(username, password))
            Assert.Equal(HttpStatusCode.TooManyRequests, locked.StatusCode);

        Assert.Equal(HttpStatusCode.OK, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);
        var created = await server.Client(jwt).PostAsJsonAsync("/api/v1/tokens", new { name = "made-while-locked" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        PortcullisServer.Secrets.Add((await created.JsonAsync()).GetProperty("token").GetString()!);
    }

    [Fact]
    public async Task ASuccessfulLoginResetsTheUsersCounter()
    {
        var (username, password, _) = await server.CreateUserAsync();
        for (var i = 0; i < Limit - 1; i++)
            Assert.Equal(HttpStatusCode.BadRequest, (await LoginAsync(username, WrongPassword)).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await LoginAsync(username, password)).StatusCode);
        for (var i = 0; i < Limit; i++)
            Assert.Equal(HttpStatusCode.BadRequest, (await LoginAsync(username, WrongPassword)).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await LoginAsync(username, WrongPassword)).StatusCode);
    }

    [Fact]
    public async Task BothTokenEndpointsAndBothBodyFormatsShareOneCounterPerUsername()
    {
        var (username, _, _) = await server.CreateUserAsync();
        Assert.Equal(HttpStatusCode.BadRequest, (await LoginAsync(username, WrongPassword)).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await LoginAsync(username.ToUpperInvariant(), WrongPassword, "/auth/token/cli")).StatusCode);
        using var form = new FormUrlEncodedContent([new("grant_type", "password"), new("username", username), new("password", WrongPassword)]);
        Assert.Equal(HttpStatusCode.BadRequest, (await server.Client().PostAsync("/auth/token", form)).StatusCode);
        using var throttled = await LoginAsync(username, WrongPassword, "/auth/token/cli");
        Assert.Equal(HttpStatusCode.TooManyRequests, throttled.StatusCode);
        Assert.Equal("temporarily_unavailable", (await throttled.JsonAsync()).GetProperty("error").GetString());
    }

    [Fact]
    public async Task WrongPasswordsAtTheWebLoginCountTowardsTheSameLimitAsTheApi()
    {
        var (username, password, _) = await server.CreateUserAsync();
        using var browser = new Browser(server.BaseAddress);
        for (var i = 0; i < Limit; i++)
            Assert.Equal(HttpStatusCode.BadRequest, (await browser.LogInAsync(username, WrongPassword)).StatusCode);
        // Locked on the API too, and on the web with the right password.
        using (var api = await LoginAsync(username, password))
            Assert.Equal(HttpStatusCode.TooManyRequests, api.StatusCode);
        using var web = await browser.LogInAsync(username, password);
        Assert.Equal(HttpStatusCode.TooManyRequests, web.StatusCode);
        Assert.Contains("Try again in", await web.Content.ReadAsStringAsync());
        Assert.InRange(int.Parse(web.Header("Retry-After")), 1, 15 * 60);
    }

    [Fact]
    public async Task WrongCurrentPasswordsAtMePasswordCountTowardsTheSameLimit()
    {
        var (username, password, token) = await server.CreateUserAsync();
        using var client = server.Client(token);
        var change = new { current_password = WrongPassword, new_password = "a-new-password-1" };
        for (var i = 0; i < Limit; i++)
            Assert.Equal(HttpStatusCode.BadRequest, (await client.PostAsJsonAsync("/api/v1/me/password", change)).StatusCode);

        using var throttled = await client.PostAsJsonAsync("/api/v1/me/password", change with { current_password = password });
        Assert.Equal(HttpStatusCode.TooManyRequests, throttled.StatusCode);
        Assert.Equal("application/problem+json", throttled.Content.Headers.ContentType?.MediaType);
        Assert.InRange(int.Parse(throttled.Header("Retry-After")), 1, 15 * 60);
        Assert.Equal(429, (await throttled.JsonAsync()).GetProperty("status").GetInt32());

        // The same counter as the login, and the token itself is not throttled.
        Assert.Equal(HttpStatusCode.TooManyRequests, (await LoginAsync(username, password)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/v1/me")).StatusCode);
    }

    private Task<HttpResponseMessage> LoginAsync(string username, string password, string path = "/auth/token") =>
        server.Client().PostAsJsonAsync(path, new { username, password });

    private async Task<long> PasswordChecksAsync()
    {
        var metrics = await server.Client().GetStringAsync("/metrics");
        return long.Parse(Regex.Match(metrics, @"^portcullis_password_checks_total(?:\{\})? (\d+)$", RegexOptions.Multiline).Groups[1].Value);
    }

    private static string WithoutNumbers(string s) => Regex.Replace(s, @"\d+", "N");

    internal sealed record AuditEntry(string Event, string? Subject, string? ClientIp);

    /// <summary>The matching audit events; throttling is audited in the background, so this waits a little for them.</summary>
    private async Task<List<AuditEntry>> AuditEventsAsync(Func<AuditEntry, bool> match, int atLeast) =>
        await ReadAuditAsync(server, match, atLeast);

    internal static async Task<List<AuditEntry>> ReadAuditAsync(PortcullisServer server, Func<AuditEntry, bool> match, int atLeast)
    {
        using var admin = server.Client(await server.AdminTokenAsync());
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            var page = await (await admin.GetAsync("/api/v1/audit?limit=1000")).JsonAsync();
            var found = page.GetProperty("events").EnumerateArray()
                .Select(e => new AuditEntry(e.GetProperty("event").GetString()!, e.GetProperty("subject").GetString(), e.GetProperty("client_ip").GetString()))
                .Where(match).ToList();
            if (found.Count >= atLeast || DateTime.UtcNow > deadline)
            {
                // Give a second writer batch the chance to show a duplicate before counting.
                await Task.Delay(300);
                page = await (await admin.GetAsync("/api/v1/audit?limit=1000")).JsonAsync();
                return page.GetProperty("events").EnumerateArray()
                    .Select(e => new AuditEntry(e.GetProperty("event").GetString()!, e.GetProperty("subject").GetString(), e.GetProperty("client_ip").GetString()))
                    .Where(match).ToList();
            }
            await Task.Delay(100);
        }
    }
}

public sealed class SqliteLoginThrottleTests(UserThrottledSqliteServer server) : LoginThrottleTests(server), IClassFixture<UserThrottledSqliteServer>;

public sealed class PostgresLoginThrottleTests(UserThrottledPostgresServer server) : LoginThrottleTests(server), IClassFixture<UserThrottledPostgresServer>;

/// <summary>docs/decisions.md: failed logins are throttled per client address too, whichever usernames are tried.</summary>
public abstract class AddressThrottleTests(PortcullisServer server)
{
    public const int Limit = 4;

    public static Dictionary<string, string> PerAddressSettings() => new()
    {
        ["Auth:MaxFailedLoginsPerUser"] = "100",
        ["Auth:MaxFailedLoginsPerAddress"] = Limit.ToString(),
        ["Auth:MaxConcurrentPasswordHashes"] = "4",
    };

    // One test only: once the address is locked, every login from loopback is refused for the window.
    [Fact]
    public async Task FiftyParallelWrongLoginsUnderDifferentNamesGetNoMoreAttemptsThanTheAddressLimit()
    {
        var adminToken = await server.AdminTokenAsync();
        using var client = server.Client();
        var responses = await Task.WhenAll(Enumerable.Range(0, 50).Select(i =>
            client.PostAsJsonAsync("/auth/token", new { username = $"sprayed-{i}", password = "wrong-password-x" })));
        var statuses = responses.Select(r => r.StatusCode).ToList();
        foreach (var r in responses)
            r.Dispose();
        Assert.InRange(statuses.Count(s => s != HttpStatusCode.TooManyRequests), 1, Limit);
        Assert.All(statuses, s => Assert.True(s is HttpStatusCode.BadRequest or HttpStatusCode.TooManyRequests, $"unexpected {s}"));

        // Every username from this address is refused now, the right admin password included...
        using var admin = await client.PostAsJsonAsync("/auth/token", new { username = "admin", password = PortcullisServer.AdminPassword });
        Assert.Equal(HttpStatusCode.TooManyRequests, admin.StatusCode);
        Assert.InRange(int.Parse(admin.Header("Retry-After")), 1, 15 * 60);
        // ...but tokens keep working.
        Assert.Equal(HttpStatusCode.OK, (await server.Client(adminToken).GetAsync("/api/v1/me")).StatusCode);

        var events = await LoginThrottleTests.ReadAuditAsync(server, e => e.Event == "login.throttled", atLeast: 1);
        var single = Assert.Single(events);
        Assert.Equal("127.0.0.1", single.Subject);
        Assert.Equal("127.0.0.1", single.ClientIp);
    }
}

public sealed class SqliteAddressThrottleTests(AddressThrottledSqliteServer server) : AddressThrottleTests(server), IClassFixture<AddressThrottledSqliteServer>;

public sealed class PostgresAddressThrottleTests(AddressThrottledPostgresServer server) : AddressThrottleTests(server), IClassFixture<AddressThrottledPostgresServer>;

public sealed class ClientSecretThrottledServer() : PortcullisServer(Provider.Sqlite, AddressThrottleTests.PerAddressSettings());

/// <summary>docs/decisions.md: client-secret checks at every OAuth endpoint count against the same per-address limit.</summary>
public sealed class ClientSecretThrottleTests(ClientSecretThrottledServer server) : IClassFixture<ClientSecretThrottledServer>
{
    // One test only: once the address is locked, every secret check from loopback is refused for the window.
    [Fact]
    public async Task WrongClientSecretsAtTokenAndIntrospectionEndpointsAreThrottledPerAddressButRightOnesAndTokensKeepWorking()
    {
        var adminToken = await server.AdminTokenAsync();
        var client = await server.CreateClientAsync(adminToken, ["api"]);
        var wrong = client with { ClientSecret = new TokenFormat("pc").Generate(TokenKind.ClientSecret) };

        // A right secret costs nothing against the limit.
        for (var i = 0; i < AddressThrottleTests.Limit + 2; i++)
            await server.ClientTokenAsync(client);

        for (var i = 0; i < AddressThrottleTests.Limit - 1; i++)
        {
            using var bad = await server.ClientCredentialsAsync(wrong);
            Assert.Equal(HttpStatusCode.Unauthorized, bad.StatusCode);
            Assert.Equal("invalid_client", (await bad.JsonAsync()).GetProperty("error").GetString());
        }
        // Introspection authenticates clients through the same check, and counts.
        using (var http = server.Client())
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/auth/introspect") { Content = new FormUrlEncodedContent([new("token", adminToken)]) })
        {
            request.Headers.Authorization = OAuthHelpers.Basic(wrong.ClientId, wrong.ClientSecret);
            using var bad = await http.SendAsync(request);
            Assert.Equal(HttpStatusCode.Unauthorized, bad.StatusCode);
        }

        // The limit is reached: wrong secrets are refused with Retry-After...
        using var refused = await server.ClientCredentialsAsync(wrong);
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.InRange(int.Parse(refused.Header("Retry-After")), 1, 15 * 60);
        Assert.Equal("temporarily_unavailable", (await refused.JsonAsync()).GetProperty("error").GetString());
        // ...from memory from now on: neither audited one by one nor counted in the database.
        var failed = (await LoginThrottleTests.ReadAuditAsync(server, e => e.Event == "login.failed", atLeast: 0)).Count;
        for (var i = 0; i < 10; i++)
            Assert.Equal(HttpStatusCode.TooManyRequests, (await server.ClientCredentialsAsync(wrong)).StatusCode);
        Assert.Equal(failed, (await LoginThrottleTests.ReadAuditAsync(server, e => e.Event == "login.failed", atLeast: 0)).Count);
        Assert.Equal(1L, Convert.ToInt64(await server.ScalarAsync("SELECT refused FROM login_throttle WHERE kind = 'address' AND subject = '127.0.0.1'")));
        // ...but the real client behind the same address keeps getting tokens: a right secret is never refused.
        await server.ClientTokenAsync(client);

        // Tokens are never throttled.
        Assert.Equal(HttpStatusCode.OK, (await server.Client(adminToken).GetAsync("/api/v1/me")).StatusCode);
        var events = await LoginThrottleTests.ReadAuditAsync(server, e => e.Event == "login.throttled", atLeast: 1);
        Assert.Equal("127.0.0.1", Assert.Single(events).Subject);
    }
}

public sealed class ThrottledInProcessServer() : InProcessServer(["--Auth:MaxFailedLoginsPerUser=2", "--Auth:FailedLoginWindow=00:05:00"]);

/// <summary>
/// In this process: the lockout ends exactly when the window does (advanceable clock), client-secret
/// counting, settings and counter keys.
/// </summary>
public sealed class LoginThrottleWindowTests(ThrottledInProcessServer server) : IClassFixture<ThrottledInProcessServer>
{
    [Fact]
    public async Task TheLockoutEndsWhenTheWindowEndsAndRetryAfterCountsDownToIt()
    {
        using var client = server.Client();
        var login = await (await client.PostAsJsonAsync("/auth/token", new { username = "admin", password = PortcullisServer.AdminPassword })).JsonAsync();
        using var admin = server.Client(login.GetProperty("access_token").GetString()!);
        const string password = "window-test-password-1";
        Assert.Equal(HttpStatusCode.Created, (await admin.PostAsJsonAsync("/api/v1/users", new { username = "window-user", password })).StatusCode);

        for (var i = 0; i < 2; i++)
            Assert.Equal(HttpStatusCode.BadRequest, (await client.PostAsJsonAsync("/auth/token", new { username = "window-user", password = "wrong-password-x" })).StatusCode);
        using (var locked = await client.PostAsJsonAsync("/auth/token", new { username = "window-user", password }))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, locked.StatusCode);
            Assert.Equal("300", locked.Header("Retry-After"));
        }

        server.Clock.Advance(TimeSpan.FromSeconds(299));
        using (var stillLocked = await client.PostAsJsonAsync("/auth/token", new { username = "window-user", password }))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, stillLocked.StatusCode);
            Assert.Equal("1", stillLocked.Header("Retry-After"));
        }

        server.Clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(HttpStatusCode.Created, (await client.PostAsJsonAsync("/auth/token", new { username = "window-user", password })).StatusCode);
    }

    [Fact]
    public async Task WrongClientSecretsCountPerAddressAndARightOneWritesNothing()
    {
        var address = IPAddress.Parse("198.51.100." + Random.Shared.Next(1, 255));
        // Right secrets, any number of them, leave the counter alone.
        for (var i = 0; i < 60; i++)
        {
            await using var scope = server.Services.CreateAsyncScope();
            var attempt = await CheckInAsync(scope, address, "client-a");
            Assert.False(attempt.IsThrottled);
            await attempt.RecordSuccessAsync();
        }
        // 50 wrong ones (the default per-address limit), under different client ids, then the address is refused.
        for (var i = 0; i < 50; i++)
        {
            await using var scope = server.Services.CreateAsyncScope();
            var attempt = await CheckInAsync(scope, address, $"client-{i}");
            Assert.False(attempt.IsThrottled, $"refused after {i} failures");
            await attempt.RecordFailureAsync();
        }
        await using (var scope = server.Services.CreateAsyncScope())
        {
            var refused = await CheckInAsync(scope, address, "client-a");
            Assert.True(refused.IsThrottled);
            Assert.InRange(refused.RetryAfterSeconds, 1, 15 * 60);
        }
    }

    private static async Task<LoginAttempt> CheckInAsync(AsyncServiceScope scope, IPAddress address, string clientId)
    {
        var http = new DefaultHttpContext { RequestServices = scope.ServiceProvider };
        http.Connection.RemoteIpAddress = address;
        http.Request.Path = "/auth/token";
        return await scope.ServiceProvider.GetRequiredService<LoginThrottle>().CheckAsync(LoginKind.ClientSecret, clientId, http, CancellationToken.None);
    }

    [Theory]
    [InlineData("--Auth:MaxFailedLoginsPerUser=0", "Auth:MaxFailedLoginsPerUser")]
    [InlineData("--Auth:MaxFailedLoginsPerAddress=-1", "Auth:MaxFailedLoginsPerAddress")]
    [InlineData("--Auth:FailedLoginWindow=00:00:00", "Auth:FailedLoginWindow")]
    [InlineData("--Auth:FailedLoginWindow=2.00:00:00", "Auth:FailedLoginWindow")]
    public void BadThrottleSettingsStopStartUpNamingTheKey(string setting, string key)
    {
        var dir = Directory.CreateTempSubdirectory("portcullis-badthrottle-").FullName;
        // Settings are checked as the server is built, before anything that reads them is made.
        var e = Assert.Throws<StartupException>(() => ServerApp.Build(["--urls", $"http://127.0.0.1:{PortcullisServer.FreePort()}", "--data-dir", dir, setting]));
        Assert.Contains(key, e.Message);
        Directory.Delete(dir, recursive: true);
    }

    [Theory]
    [InlineData("203.0.113.7", "203.0.113.7")]
    [InlineData("::ffff:203.0.113.7", "203.0.113.7")]
    [InlineData("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64")]
    [InlineData("2001:db8:1:2::1", "2001:db8:1:2::/64")]
    public void AddressesAreCountedByIpv4AddressAndIpv6Slash64(string address, string subject) =>
        Assert.Equal(subject, LoginThrottle.AddressSubject(IPAddress.Parse(address)));

    [Fact]
    public void UsernamesAreCountedWithoutRegardToCase() =>
        Assert.Equal(LoginThrottle.UserSubject("Alice"), LoginThrottle.UserSubject("aLICE"));
}
