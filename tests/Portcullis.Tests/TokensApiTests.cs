using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>docs/decisions.md (API tokens, /me) against a real server; run once per database provider.</summary>
public abstract class TokensApiTests(PortcullisServer server)
{
    private static readonly Regex Published = new(@"\b(pc[psc])_[0-9A-Za-z]{36}\b");

    [Fact]
    public async Task CreatedTokenIsShownOnceInTheSpecFormatAndWorksWithBothSchemes()
    {
        var (username, password, _) = await server.CreateUserAsync();
        var jwt = await server.LoginAsync(username, password);
        using var client = server.Client(jwt);
        var response = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "ci", description = "deploys", expires_in_days = 30 });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Contains("no-store", response.Header("Cache-Control"));
        var body = await response.JsonAsync();
        var token = body.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);

        Assert.Matches(Published, token);
        Assert.StartsWith("pcp_", token);
        Assert.Equal(Checksum(token[..34]), token[34..]);
        Assert.Equal(token[..8] + "…", body.GetProperty("token_hint").GetString());
        Assert.Equal<string>(["api", "services"], body.GetProperty("scopes").EnumerateArray().Select(s => s.GetString()!).ToArray());
        var created = body.GetProperty("created_at").GetDateTime();
        var expires = body.GetProperty("expires_at").GetDateTime();
        Assert.Equal(TimeSpan.FromDays(30), expires - created);

        foreach (var scheme in new[] { "Bearer", "bearer", "token", "TOKEN" })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/api/v1/me").WithAuthorization(scheme, token);
            using var me = await server.Client().SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, me.StatusCode);
            var meBody = await me.JsonAsync();
            Assert.Equal(username, meBody.GetProperty("username").GetString());
            Assert.Equal("api_token", meBody.GetProperty("auth").GetProperty("kind").GetString());
            Assert.Equal(body.GetProperty("id").GetInt64().ToString(), meBody.GetProperty("auth").GetProperty("token_id").GetString());
        }

        // Never again: neither the list nor the detail carries the secret.
        var list = await client.GetStringAsync("/api/v1/tokens");
        var detail = await client.GetStringAsync($"/api/v1/tokens/{body.GetProperty("id").GetInt64()}");
        Assert.DoesNotContain(token, list);
        Assert.DoesNotContain(token, detail);
        Assert.DoesNotContain("\"token\"", list);
        Assert.Contains("\"status\":\"active\"", detail);
    }

    [Fact]
    public async Task TokenWithABadChecksumIsRejected()
    {
        var token = await server.AdminTokenAsync();
        var tampered = Tampering.LastCharacterChanged(token);
        using var response = await server.Client(tampered).GetAsync("/api/v1/me");
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains("error=\"invalid_token\"", response.Header("WWW-Authenticate"));
    }

    [Fact]
    public async Task RevokedTokenIsRejectedOnTheNextRequest()
    {
        var (_, _, token) = await server.CreateUserAsync();
        using var client = server.Client(token);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/v1/me")).StatusCode);
        var id = (await (await client.GetAsync("/api/v1/me")).JsonAsync()).GetProperty("auth").GetProperty("token_id").GetString();

        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/v1/tokens/{id}")).StatusCode);

        using var after = await client.GetAsync("/api/v1/me");
        Assert.Equal(HttpStatusCode.Unauthorized, after.StatusCode);
        Assert.Contains("error=\"invalid_token\"", after.Header("WWW-Authenticate"));
        using var admin = server.Client(await server.AdminTokenAsync());
        var detail = await (await admin.GetAsync($"/api/v1/tokens/{id}")).JsonAsync();
        Assert.Equal("revoked", detail.GetProperty("status").GetString());
        // Revoking again is harmless.
        Assert.Equal(HttpStatusCode.NoContent, (await admin.DeleteAsync($"/api/v1/tokens/{id}")).StatusCode);
        // And the use after revocation is an audit event.
        await Eventually(async () =>
        {
            var audit = await admin.GetStringAsync("/api/v1/audit?limit=50");
            return audit.Contains("token.used_after_revoke") && audit.Contains("token.revoked");
        });
    }

    [Fact]
    public async Task RotationWithoutGraceStopsTheOldTokenAtOnceAndKeepsTheSettings()
    {
        var admin = server.Client(await server.AdminTokenAsync());
        var old = await server.CreateTokenAsync(await server.AdminTokenAsync(), new { name = "rotate-me", description = "d", expires_in_days = 10, scopes = new[] { "services" } });
        var id = await IdOf(old);
        var response = await admin.PostAsJsonAsync($"/api/v1/tokens/{id}/rotate", new { });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("no-store", response.Header("Cache-Control"));
        var body = await response.JsonAsync();
        var successor = body.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(successor);
        Assert.NotEqual(old, successor);
        Assert.Equal("rotate-me", body.GetProperty("name").GetString());
        Assert.Equal("d", body.GetProperty("description").GetString());
        Assert.Equal<string>(["services"], body.GetProperty("scopes").EnumerateArray().Select(s => s.GetString()!).ToArray());
        Assert.Equal(TimeSpan.FromDays(10), body.GetProperty("expires_at").GetDateTime() - body.GetProperty("created_at").GetDateTime());

        Assert.Equal(HttpStatusCode.Unauthorized, await MeStatusAsync(old));
        Assert.Equal(HttpStatusCode.OK, await MeStatusAsync(successor));
        // Rotating the old one again is a conflict that names the successor.
        var again = await admin.PostAsJsonAsync($"/api/v1/tokens/{id}/rotate", new { });
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
    }

    /// <summary>Here, that the old token keeps working; that it stops at the grace's end is tested with a clock (ExpiryTests).</summary>
    [Fact]
    public async Task RotationWithGraceKeepsTheOldTokenWorking()
    {
        var admin = server.Client(await server.AdminTokenAsync());
        var old = await server.CreateTokenAsync(await server.AdminTokenAsync(), new { name = "graceful" });
        var response = await admin.PostAsJsonAsync($"/api/v1/tokens/{await IdOf(old)}/rotate", new { grace_seconds = 3600 });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var successor = (await response.JsonAsync()).GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(successor);
        Assert.Equal(HttpStatusCode.OK, await MeStatusAsync(old));
        Assert.Equal(HttpStatusCode.OK, await MeStatusAsync(successor));
    }

    [Fact]
    public async Task TwoConcurrentRotationsYieldOneSuccessor()
    {
        var adminToken = await server.AdminTokenAsync();
        var old = await server.CreateTokenAsync(adminToken, new { name = "raced" });
        var id = await IdOf(old);
        var attempts = await Task.WhenAll(Enumerable.Range(0, 6).Select(async _ =>
        {
            using var client = server.Client(adminToken);
            var r = await client.PostAsJsonAsync($"/api/v1/tokens/{id}/rotate", new { });
            if (r.StatusCode == HttpStatusCode.OK)
                PortcullisServer.Secrets.Add((await r.JsonAsync()).GetProperty("token").GetString()!);
            return r.StatusCode;
        }));
        Assert.Equal(1, attempts.Count(s => s == HttpStatusCode.OK));
        Assert.All(attempts.Where(s => s != HttpStatusCode.OK), s => Assert.Equal(HttpStatusCode.Conflict, s));
        var tokens = await (await server.Client(adminToken).GetAsync("/api/v1/tokens")).JsonAsync();
        Assert.Equal(2, tokens.EnumerateArray().Count(t => t.GetProperty("name").GetString() == "raced"));
    }

    [Fact]
    public async Task LastUsedAndUsagePerDayAreRecorded()
    {
        var (_, _, token) = await server.CreateUserAsync();
        using var client = server.Client(token);
        for (var i = 0; i < 5; i++)
            Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/v1/me")).StatusCode);
        var id = await IdOf(token);
        await Eventually(async () =>
        {
            var usage = await (await client.GetAsync($"/api/v1/tokens/{id}/usage?days=7")).JsonAsync();
            return usage.GetProperty("total").GetInt64() >= 6 && usage.GetProperty("usage").GetArrayLength() == 7;
        });
        var detail = await (await client.GetAsync($"/api/v1/tokens/{id}")).JsonAsync();
        Assert.Equal("127.0.0.1", detail.GetProperty("last_used_ip").GetString());
        Assert.True(detail.GetProperty("last_used_at").GetDateTime() > DateTime.UtcNow.AddMinutes(-5));
    }

    [Theory]
    [InlineData("""{"name": " "}""", "name")]
    [InlineData("""{"name": "x", "description": "\u0001"}""", "description")]
    [InlineData("""{"name": "x", "expires_in_days": 0}""", "expires_in_days")]
    [InlineData("""{"name": "x", "expires_at": "yesterday"}""", "expires_at")]
    [InlineData("""{"name": "x", "scopes": ["everything"]}""", "scopes")]
    [InlineData("""{"name": "x", "owner": "nobody-at-all"}""", "owner")]
    public async Task ABrokenRuleNamesItsFieldBesidesSayingWhatToDo(string body, string field)
    {
        var (_, _, token) = await server.CreateUserAsync();
        var response = await server.Client(token).PostAsync("/api/v1/tokens", new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.True(response.StatusCode is HttpStatusCode.BadRequest or HttpStatusCode.Forbidden, $"{response.StatusCode}");
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>();
        var detail = problem.GetProperty("detail").GetString();
        // The same message, under the field it concerns (the shape of ASP.NET Core's validation problems).
        Assert.Equal(detail, Assert.Single(problem.GetProperty("errors").GetProperty(field).EnumerateArray()).GetString());
    }

    [Fact]
    public async Task TokenNamesAreUniqueAmongTheOwnersActiveTokens()
    {
        var (_, _, token) = await server.CreateUserAsync();
        using var client = server.Client(token);
        Assert.Equal(HttpStatusCode.Created, (await client.PostAsJsonAsync("/api/v1/tokens", new { name = "dup" })).StatusCode);
        var second = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "dup" });
        Assert.Equal(HttpStatusCode.Conflict, second.StatusCode);
        Assert.Equal("application/problem+json", second.Content.Headers.ContentType?.MediaType);
        // Another user may use the same name.
        var (_, _, other) = await server.CreateUserAsync();
        Assert.Equal(HttpStatusCode.Created, (await server.Client(other).PostAsJsonAsync("/api/v1/tokens", new { name = "dup" })).StatusCode);
    }

    [Fact]
    public async Task NobodyMintsATokenWithMoreRightsThanTheyHave()
    {
        var (_, _, token) = await server.CreateUserAsync();
        using var client = server.Client(token);
        var admin = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "escalate", scopes = new[] { "admin" } });
        Assert.Equal(HttpStatusCode.BadRequest, admin.StatusCode);
        var unknown = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "weird", scopes = new[] { "root" } });
        Assert.Equal(HttpStatusCode.BadRequest, unknown.StatusCode);

        // A narrower credential cannot mint a wider one either.
        var narrow = await server.CreateTokenAsync(token, new { name = "narrow", scopes = new[] { "api" } });
        var wider = await server.Client(narrow).PostAsJsonAsync("/api/v1/tokens", new { name = "wider", scopes = new[] { "api", "services" } });
        Assert.Equal(HttpStatusCode.BadRequest, wider.StatusCode);
        // Non-admins may not create tokens for others.
        var forOther = await client.PostAsJsonAsync("/api/v1/tokens", new { name = "x", owner = "admin" });
        Assert.Equal(HttpStatusCode.Forbidden, forOther.StatusCode);
    }

    [Fact]
    public async Task TokenWithoutApiScopeGetsInsufficientScope()
    {
        var (_, _, token) = await server.CreateUserAsync();
        var servicesOnly = await server.CreateTokenAsync(token, new { name = "svc-only", scopes = new[] { "services:model" } });
        using var response = await server.Client(servicesOnly).GetAsync("/api/v1/tokens");
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        var header = response.Header("WWW-Authenticate");
        Assert.Contains("error=\"insufficient_scope\"", header);
        Assert.Contains("scope=\"api\"", header);
        // /me works with any valid credential and reports the effective scopes.
        var me = await (await server.Client(servicesOnly).GetAsync("/api/v1/me")).JsonAsync();
        Assert.Equal<string>(["services:model"], me.GetProperty("auth").GetProperty("scopes").EnumerateArray().Select(s => s.GetString()!).ToArray());
        // A normal user's token cannot reach admin endpoints.
        using var users = await server.Client(token).GetAsync("/api/v1/users");
        Assert.Equal(HttpStatusCode.Forbidden, users.StatusCode);
        Assert.Contains("scope=\"admin\"", users.Header("WWW-Authenticate"));
    }

    [Fact]
    public async Task UsersCannotSeeOrTouchEachOthersTokens()
    {
        var (_, _, alice) = await server.CreateUserAsync();
        var (_, _, bob) = await server.CreateUserAsync();
        var aliceId = await IdOf(alice);
        using var bobClient = server.Client(bob);
        Assert.Equal(HttpStatusCode.NotFound, (await bobClient.GetAsync($"/api/v1/tokens/{aliceId}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await bobClient.DeleteAsync($"/api/v1/tokens/{aliceId}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await bobClient.PostAsJsonAsync($"/api/v1/tokens/{aliceId}/rotate", new { })).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await bobClient.GetAsync($"/api/v1/tokens/{aliceId}/usage")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await bobClient.GetAsync("/api/v1/tokens?all=true")).StatusCode);
        var list = await (await bobClient.GetAsync("/api/v1/tokens")).JsonAsync();
        Assert.DoesNotContain(list.EnumerateArray(), t => t.GetProperty("id").GetInt64() == aliceId);
        Assert.Equal(HttpStatusCode.OK, await MeStatusAsync(alice));
        // The admin sees everyone's.
        var all = await (await server.Client(await server.AdminTokenAsync()).GetAsync("/api/v1/tokens?all=true")).JsonAsync();
        Assert.Contains(all.EnumerateArray(), t => t.GetProperty("id").GetInt64() == aliceId);
    }

    [Fact]
    public async Task AdminCreatesATokenForAnotherUser()
    {
        var (username, _, _) = await server.CreateUserAsync();
        using var admin = server.Client(await server.AdminTokenAsync());
        var response = await admin.PostAsJsonAsync("/api/v1/tokens", new { name = "for-them", owner = username });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var body = await response.JsonAsync();
        var token = body.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        Assert.Equal(username, body.GetProperty("owner").GetString());
        var me = await (await server.Client(token).GetAsync("/api/v1/me")).JsonAsync();
        Assert.Equal(username, me.GetProperty("username").GetString());
        // Not beyond the owner's rights, even for an admin.
        var tooMuch = await admin.PostAsJsonAsync("/api/v1/tokens", new { name = "for-them-admin", owner = username, scopes = new[] { "admin" } });
        Assert.Equal(HttpStatusCode.BadRequest, tooMuch.StatusCode);
    }

    [Fact]
    public async Task DisablingAUserStopsTheirTokensAndJwtsOnTheNextRequest()
    {
        var (username, password, token) = await server.CreateUserAsync();
        var jwt = await server.LoginAsync(username, password);
        Assert.Equal(HttpStatusCode.OK, await MeStatusAsync(token));
        Assert.Equal(HttpStatusCode.OK, await MeStatusAsync(jwt));
        using var admin = server.Client(await server.AdminTokenAsync());

        Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { disabled = true })).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, await MeStatusAsync(token));
        Assert.Equal(HttpStatusCode.Unauthorized, await MeStatusAsync(jwt));
        using (var login = await server.Client().PostAsJsonAsync("/auth/token", new { username, password }))
            Assert.Equal("invalid_grant", (await login.JsonAsync()).GetProperty("error").GetString());

        // Enabled again: the API token works again, the JWT issued before stays dead.
        Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { disabled = false })).StatusCode);
        Assert.Equal(HttpStatusCode.OK, await MeStatusAsync(token));
        Assert.Equal(HttpStatusCode.Unauthorized, await MeStatusAsync(jwt));
    }

    [Fact]
    public async Task DemotedAdminLosesAdminRightsOnTheNextRequest()
    {
        var (username, password, _) = await server.CreateUserAsync(admin: true);
        var jwt = await server.LoginAsync(username, password);
        var adminScoped = await server.CreateTokenAsync(jwt, new { name = "adm", scopes = new[] { "api", "admin" } });
        Assert.Equal(HttpStatusCode.OK, (await server.Client(adminScoped).GetAsync("/api/v1/users")).StatusCode);
        using var admin = server.Client(await server.AdminTokenAsync());
        Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { admin = false })).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await server.Client(adminScoped).GetAsync("/api/v1/users")).StatusCode);
        // Still a user: the api part of the token keeps working.
        Assert.Equal(HttpStatusCode.OK, (await server.Client(adminScoped).GetAsync("/api/v1/tokens")).StatusCode);
    }

    [Fact]
    public async Task DeletedUsersCredentialsDieAndDoNotComeBackWithANewUserOfTheSameName()
    {
        var (username, password, token) = await server.CreateUserAsync();
        var jwt = await server.LoginAsync(username, password);
        using var admin = server.Client(await server.AdminTokenAsync());
        Assert.Equal(HttpStatusCode.NoContent, (await admin.DeleteAsync($"/api/v1/users/{username}")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, await MeStatusAsync(token));
        Assert.Equal(HttpStatusCode.Unauthorized, await MeStatusAsync(jwt));

        Assert.Equal(HttpStatusCode.Created, (await admin.PostAsJsonAsync("/api/v1/users", new { username, password })).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, await MeStatusAsync(jwt));
        Assert.Equal(HttpStatusCode.Unauthorized, await MeStatusAsync(token));
    }

    [Fact]
    public async Task ChangingThePasswordRevokesJwtsButNotApiTokens()
    {
        var (username, password, token) = await server.CreateUserAsync();
        var jwt = await server.LoginAsync(username, password);
        var newPassword = "new-" + Guid.NewGuid().ToString("N");
        PortcullisServer.Secrets.Add(newPassword);
        using var wrong = await server.Client(jwt).PostAsJsonAsync("/api/v1/me/password", new { current_password = "not-it-at-all", new_password = newPassword });
        Assert.Equal(HttpStatusCode.BadRequest, wrong.StatusCode);
        using var right = await server.Client(jwt).PostAsJsonAsync("/api/v1/me/password", new { current_password = password, new_password = newPassword });
        Assert.Equal(HttpStatusCode.NoContent, right.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, await MeStatusAsync(jwt));
        Assert.Equal(HttpStatusCode.OK, await MeStatusAsync(token));
        var fresh = await server.LoginAsync(username, newPassword);
        Assert.Equal(HttpStatusCode.OK, await MeStatusAsync(fresh));
    }

    [Fact]
    public async Task AuditLogRecordsTokenEventsWithoutSecretsAndUsersSeeOnlyTheirOwn()
    {
        var (username, _, token) = await server.CreateUserAsync();
        var second = await server.CreateTokenAsync(token, new { name = "audited" });
        var own = await (await server.Client(token).GetAsync("/api/v1/audit")).JsonAsync();
        var events = own.GetProperty("events").EnumerateArray().ToList();
        Assert.Contains(events, e => e.GetProperty("event").GetString() == "token.created" && e.GetProperty("subject").GetString() == username);
        Assert.All(events, e => Assert.True(e.GetProperty("actor").GetString() == username || e.GetProperty("subject").GetString() == username));
        var raw = own.GetRawText();
        Assert.DoesNotContain(second, raw);
        Assert.DoesNotContain(token, raw);
        Assert.Contains(second[..8], raw); // the hint identifies it
        var all = await (await server.Client(await server.AdminTokenAsync()).GetAsync("/api/v1/audit?limit=1000")).JsonAsync();
        Assert.Contains(all.GetProperty("events").EnumerateArray(), e => e.GetProperty("event").GetString() == "login.succeeded");
        Assert.Contains(all.GetProperty("events").EnumerateArray(), e => e.GetProperty("event").GetString() == "user.created");
    }

    /// <summary>What <c>GET /api/v1/me</c> answers to this credential: the simplest "does it work?".</summary>
    private async Task<HttpStatusCode> MeStatusAsync(string credential)
    {
        using var response = await server.Client(credential).GetAsync("/api/v1/me");
        return response.StatusCode;
    }

    private async Task<long> IdOf(string token)
    {
        var me = await (await server.Client(token).GetAsync("/api/v1/me")).JsonAsync();
        return long.Parse(me.GetProperty("auth").GetProperty("token_id").GetString()!);
    }

    internal static async Task Eventually(Func<Task<bool>> condition, int timeoutMs = 10_000)
    {
        var deadline = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (DateTime.UtcNow < deadline)
        {
            if (await condition())
                return;
            await Task.Delay(100);
        }
        Assert.Fail("The condition did not become true in time.");
    }

    /// <summary>docs/decisions.md checksum, computed independently of the server: bitwise CRC-32 and base62.</summary>
    internal static string Checksum(string text)
    {
        uint crc = 0xFFFFFFFF;
        foreach (var b in Encoding.ASCII.GetBytes(text))
        {
            crc ^= b;
            for (var k = 0; k < 8; k++)
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
        }
        crc = ~crc;
        const string alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        var chars = new char[6];
        for (var i = 5; i >= 0; i--)
        {
            chars[i] = alphabet[(int)(crc % 62)];
            crc /= 62;
        }
        return new string(chars);
    }
}

public sealed class SqliteTokensApiTests(SqliteServer server) : TokensApiTests(server), IClassFixture<SqliteServer>;

public sealed class PostgresTokensApiTests(PostgresServer server) : TokensApiTests(server), IClassFixture<PostgresServer>;
