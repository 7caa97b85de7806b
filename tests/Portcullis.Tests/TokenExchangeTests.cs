using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Playwright;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>A Portcullis that trusts one issuer the tests run, with two rules acting as the user <see cref="Deployer"/>.</summary>
public sealed class TrustedIssuerFixture : IAsyncLifetime
{
    public const string Audience = "https://portcullis.test";
    public const string Deployer = "ci-deployer";

    public TestIssuer Issuer { get; private set; } = null!;
    public PortcullisServer Server { get; private set; } = null!;

    public static Dictionary<string, string> Settings(string issuer) => new()
    {
        ["Auth:TrustedIssuers:0:Name"] = "ci",
        ["Auth:TrustedIssuers:0:Issuer"] = issuer,
        ["Auth:TrustedIssuers:0:Audience"] = Audience,
        // Each token with a kid the tests have not seen may fetch the keys again at once (the default waits 10 s).
        ["Auth:TrustedIssuers:0:UnknownKeyRefreshInterval"] = "00:00:00",
        ["Auth:TrustedIssuers:0:Rules:0:Name"] = "main-deploy",
        ["Auth:TrustedIssuers:0:Rules:0:Claims:repository"] = "acme/model",
        ["Auth:TrustedIssuers:0:Rules:0:Claims:ref"] = "refs/heads/main",
        ["Auth:TrustedIssuers:0:Rules:0:Scopes"] = "services:model",
        ["Auth:TrustedIssuers:0:Rules:0:ActAs"] = Deployer,
        ["Auth:TrustedIssuers:0:Rules:1:Name"] = "release-tags",
        ["Auth:TrustedIssuers:0:Rules:1:Claims:repository:0"] = "acme/model",
        ["Auth:TrustedIssuers:0:Rules:1:Claims:repository:1"] = "acme/model-tools",
        ["Auth:TrustedIssuers:0:Rules:1:Claims:ref"] = "refs/tags/v*",
        ["Auth:TrustedIssuers:0:Rules:1:Scopes"] = "api services:model",
        ["Auth:TrustedIssuers:0:Rules:1:Lifetime"] = "00:05:00",
        ["Auth:TrustedIssuers:0:Rules:1:ActAs"] = Deployer,
    };

    public async Task InitializeAsync()
    {
        Issuer = await TestIssuer.StartAsync();
        Server = PortcullisServer.With(Provider.Sqlite, Settings(Issuer.Url));
        await Server.InitializeAsync();
        await CreateDeployerAsync(Server);
    }

    public static async Task CreateDeployerAsync(PortcullisServer server)
    {
        using var admin = server.Client(await server.AdminTokenAsync());
        var password = "pw-" + Guid.NewGuid().ToString("N");
        PortcullisServer.Secrets.Add(password);
        using var created = await admin.PostAsJsonAsync("/api/v1/users", new { username = Deployer, password });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        await Issuer.DisposeAsync();
    }
}

public sealed class TokenExchangeTests(TrustedIssuerFixture fixture) : IClassFixture<TrustedIssuerFixture>
{
    private PortcullisServer Server => fixture.Server;
    private TestIssuer Issuer => fixture.Issuer;

    private static Dictionary<string, object?> MainBranch() => new() { ["repository"] = "acme/model", ["ref"] = "refs/heads/main" };

    [Fact]
    public async Task AMatchingTokenIsTradedForAShortLivedTokenOfTheRulesPrincipalAndTheExchangeIsAudited()
    {
        using var response = await Exchange(Server, Issuer.Token(TrustedIssuerFixture.Audience, MainBranch()));
        var body = await IssuedAsync(response);
        Assert.Equal("urn:ietf:params:oauth:token-type:access_token", body.GetProperty("issued_token_type").GetString());
        Assert.Equal("Bearer", body.GetProperty("token_type").GetString());
        Assert.Equal(900, body.GetProperty("expires_in").GetInt32());
        Assert.Equal("services:model", body.GetProperty("scope").GetString());
        var token = body.GetProperty("access_token").GetString()!;

        using var asCi = Server.Client(token);
        var me = await (await asCi.GetAsync("/api/v1/me")).JsonAsync();
        Assert.Equal(TrustedIssuerFixture.Deployer, me.GetProperty("username").GetString());
        // Only what the rule gives: not the management API, although the principal holds it.
        Assert.Equal(HttpStatusCode.Forbidden, (await asCi.GetAsync("/api/v1/tokens")).StatusCode);

        var exchanged = await AuditedAsync(Server, "token.exchanged", e => e.GetProperty("token_id").GetString() == JwtId(token));
        Assert.Equal(TrustedIssuerFixture.Deployer, exchanged.GetProperty("subject").GetString());
        var details = exchanged.GetProperty("details");
        Assert.Equal("ci", details.GetProperty("issuer").GetString());
        Assert.Equal("main-deploy", details.GetProperty("rule").GetString());
        Assert.Equal("repo:acme/model:ref:refs/heads/main", details.GetProperty("external_subject").GetString());
    }

    [Fact]
    public async Task ALaterRuleMatchesByListAndPatternAndAScopeParameterNarrowsWhatItGives()
    {
        var tag = Issuer.Token(TrustedIssuerFixture.Audience, new() { ["repository"] = "acme/model-tools", ["ref"] = "refs/tags/v1.4.0" });
        using var response = await Exchange(Server, tag, ("scope", "api"));
        var body = await IssuedAsync(response);
        Assert.Equal("api", body.GetProperty("scope").GetString());
        Assert.Equal(300, body.GetProperty("expires_in").GetInt32());
        using var asCi = Server.Client(body.GetProperty("access_token").GetString()!);
        Assert.Equal(HttpStatusCode.OK, (await asCi.GetAsync("/api/v1/tokens")).StatusCode);
    }

    [Fact]
    public async Task ATokenNoRuleMatchesIsRefusedNamingEachRuleAndClaimButNotTheTokensValues()
    {
        var feature = Issuer.Token(TrustedIssuerFixture.Audience, new() { ["repository"] = "acme/model", ["ref"] = "refs/heads/feature-secret-name" });
        using var response = await Exchange(Server, feature);
        var error = await AssertInvalidGrantAsync(response);
        Assert.Contains("rule 'main-deploy': claim 'ref' is not 'refs/heads/main'", error);
        Assert.Contains("rule 'release-tags': claim 'ref' does not match 'refs/tags/v*'", error);
        Assert.DoesNotContain("feature-secret-name", error);
        Assert.DoesNotContain(feature, error);

        var fork = Issuer.Token(TrustedIssuerFixture.Audience, new() { ["repository"] = "mallory/model", ["ref"] = "refs/heads/main" });
        Assert.Contains("claim 'repository' is not 'acme/model'", await AssertInvalidGrantAsync(await Exchange(Server, fork)));
        var missing = Issuer.Token(TrustedIssuerFixture.Audience, new() { ["ref"] = "refs/heads/main" });
        Assert.Contains("claim 'repository'", await AssertInvalidGrantAsync(await Exchange(Server, missing)));

        var refused = await AuditedAsync(Server, "token.exchange_refused", e => e.GetProperty("details").GetProperty("reason").GetString()!.Contains("claim 'repository' is not"));
        Assert.Equal("repo:acme/model:ref:refs/heads/main", refused.GetProperty("details").GetProperty("external_subject").GetString());
    }

    [Fact]
    public async Task TokensForAnotherAudienceExpiredIssuedInTheFutureOrNotYetValidAreRefused()
    {
        Assert.Contains("'aud' must be", await AssertInvalidGrantAsync(await Exchange(Server, Issuer.Token("https://other.example", MainBranch()))));

        var past = DateTimeOffset.UtcNow.AddMinutes(-10).ToUnixTimeSeconds();
        var expired = Issuer.Token(TrustedIssuerFixture.Audience, new(MainBranch()) { ["iat"] = past, ["nbf"] = past, ["exp"] = past + 300 });
        Assert.Contains("expired", await AssertInvalidGrantAsync(await Exchange(Server, expired)));

        var future = DateTimeOffset.UtcNow.AddMinutes(5).ToUnixTimeSeconds();
        var fromTheFuture = Issuer.Token(TrustedIssuerFixture.Audience, new(MainBranch()) { ["iat"] = future, ["nbf"] = null });
        Assert.Contains("'iat'", await AssertInvalidGrantAsync(await Exchange(Server, fromTheFuture)));
        var notYet = Issuer.Token(TrustedIssuerFixture.Audience, new(MainBranch()) { ["nbf"] = future });
        Assert.Contains("'nbf'", await AssertInvalidGrantAsync(await Exchange(Server, notYet)));
        var noExpiry = Issuer.Token(TrustedIssuerFixture.Audience, new(MainBranch()) { ["exp"] = null });
        await AssertInvalidGrantAsync(await Exchange(Server, noExpiry));
    }

    [Fact]
    public async Task ForgeriesAreRefusedUnsignedHmacWithThePublicKeyAndAKeyTheIssuerNeverPublished()
    {
        var genuine = Issuer.Token(TrustedIssuerFixture.Audience, MainBranch());
        Assert.Contains("'none'", await AssertInvalidGrantAsync(await Exchange(Server, TestIssuer.Unsigned(genuine))));
        Assert.Contains("'HS256'", await AssertInvalidGrantAsync(await Exchange(Server, Issuer.HmacWithPublicKey(genuine))));
        Assert.Contains("does not publish", await AssertInvalidGrantAsync(await Exchange(Server, Issuer.TokenWithUnpublishedKey(TrustedIssuerFixture.Audience, MainBranch()))));

        // A payload changed after signing.
        var parts = genuine.Split('.');
        var payload = JsonSerializer.Deserialize<Dictionary<string, object>>(Convert.FromBase64String(PadBase64(parts[1].Replace('-', '+').Replace('_', '/'))))!;
        payload["repository"] = "acme/model";
        payload["ref"] = "refs/tags/v9";
        var tampered = parts[0] + "." + Convert.ToBase64String(JsonSerializer.SerializeToUtf8Bytes(payload)).TrimEnd('=').Replace('+', '-').Replace('/', '_') + "." + parts[2];
        Assert.Contains("signature", await AssertInvalidGrantAsync(await Exchange(Server, tampered)));

        // The genuine one still works: none of the forgeries used it up.
        using var response = await Exchange(Server, genuine);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task EachTokenIsTradedOnce()
    {
        var token = Issuer.Token(TrustedIssuerFixture.Audience, MainBranch());
        using var first = await Exchange(Server, token);
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Contains("exchanged already", await AssertInvalidGrantAsync(await Exchange(Server, token)));
    }

    [Fact]
    public async Task AfterTheIssuerRotatesItsKeyTheFirstTokenWithTheNewKidFetchesTheKeysAgain()
    {
        using (var before = await Exchange(Server, Issuer.Token(TrustedIssuerFixture.Audience, MainBranch())))
            Assert.Equal(HttpStatusCode.OK, before.StatusCode);
        var fetches = Issuer.KeyFetches;
        Issuer.RotateKey();
        using var after = await Exchange(Server, Issuer.Token(TrustedIssuerFixture.Audience, MainBranch()));
        Assert.Equal(HttpStatusCode.OK, after.StatusCode);
        Assert.True(Issuer.KeyFetches > fetches);
    }

    [Fact]
    public async Task TheExchangedTokenEndsWhenItsPrincipalIsDisabled()
    {
        using var response = await Exchange(Server, Issuer.Token(TrustedIssuerFixture.Audience, MainBranch()));
        var token = (await response.JsonAsync()).GetProperty("access_token").GetString()!;
        using var asCi = Server.Client(token);
        Assert.Equal(HttpStatusCode.OK, (await asCi.GetAsync("/api/v1/me")).StatusCode);
        using var admin = Server.Client(await Server.AdminTokenAsync());
        try
        {
            Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{TrustedIssuerFixture.Deployer}", new { disabled = true })).StatusCode);
            await asCi.UntilUnauthorizedAsync();
            Assert.Contains("does not exist or is disabled",
                await AssertInvalidGrantAsync(await Exchange(Server, Issuer.Token(TrustedIssuerFixture.Audience, MainBranch()))));
        }
        finally
        {
            Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{TrustedIssuerFixture.Deployer}", new { disabled = false })).StatusCode);
        }
    }

    [Fact]
    public async Task BadRequestsAreNamedAndDiscoveryOffersTheGrant()
    {
        using var missing = await Server.PostFormAsync("/auth/token", [new("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")]);
        Assert.Equal(HttpStatusCode.BadRequest, missing.StatusCode);
        Assert.Equal("invalid_request", (await missing.JsonAsync()).GetProperty("error").GetString());
        using var wrongType = await Exchange(Server, "x.y.z", ("subject_token_type", "urn:ietf:params:oauth:token-type:saml2"));
        Assert.Equal("invalid_request", (await wrongType.JsonAsync()).GetProperty("error").GetString());
        // Portcullis's own JWT: signed, but not by a trusted issuer.
        using var foreign = await Exchange(Server, await Server.LoginAsync());
        Assert.Contains("not issued by an issuer this server trusts", await AssertInvalidGrantAsync(foreign));

        using var client = Server.Client();
        var discovery = await (await client.GetAsync("/.well-known/oauth-authorization-server")).JsonAsync();
        Assert.Contains("urn:ietf:params:oauth:grant-type:token-exchange",
            discovery.GetProperty("grant_types_supported").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public async Task ACiScriptLogsTheCliInWithItsOidcTokenFromStandardInput()
    {
        var config = Directory.CreateTempSubdirectory("portcullis-cli-").FullName;
        try
        {
            var url = Server.BaseAddress.ToString().TrimEnd('/');
            var tag = Issuer.Token(TrustedIssuerFixture.Audience, new() { ["repository"] = "acme/model", ["ref"] = "refs/tags/v2.0.0" });
            var login = await CliRun.RunAsync(config, $"login --host {url} --oidc-token-stdin", tag + "\n");
            Assert.True(login.ExitCode == 0, login.Err);
            Assert.Contains($"as {TrustedIssuerFixture.Deployer}", login.Out);
            Assert.Contains("for 5 minutes", login.Err);
            Assert.DoesNotContain(tag, login.Out + login.Err);
            // The exchanged token (rule release-tags gives 'api') runs the CLI's commands.
            var whoami = await CliRun.RunAsync(config, "whoami");
            Assert.Equal(0, whoami.ExitCode);
            Assert.Contains(TrustedIssuerFixture.Deployer, whoami.Out);

            // The same token again is refused with the server's reason, and nothing is stored.
            var again = await CliRun.RunAsync(config, $"login --host {url} --oidc-token-stdin", tag + "\n");
            Assert.Equal(1, again.ExitCode);
            Assert.Contains("exchanged already", again.Err);
        }
        finally
        {
            Directory.Delete(config, recursive: true);
        }
    }

    [Fact]
    public async Task AMisconfiguredIssuerStopsTheServerWithEveryMistakeNamed()
    {
        var (exitCode, error) = await PortcullisServer.RefusedStartAsync("--Auth:TrustedIssuers:0:Issuer=http://ci.example.com");
        Assert.NotEqual(0, exitCode);
        Assert.Contains("Auth:TrustedIssuers:0:Name", error);
        Assert.Contains("use https", error);
        Assert.Contains("Auth:TrustedIssuers:0:Audience is missing", error);
        Assert.Contains("Auth:TrustedIssuers:0:Rules is empty", error);
    }

    /// <summary>The newest event of that name that <paramref name="match"/>es; refusals are written behind the answer, so this waits a little.</summary>
    private static async Task<JsonElement> AuditedAsync(PortcullisServer server, string name, Func<JsonElement, bool> match)
    {
        using var admin = server.Client(await server.AdminTokenAsync());
        for (var attempt = 0; attempt < 50; attempt++)
        {
            var page = await (await admin.GetAsync($"/api/v1/audit?event={name}")).JsonAsync();
            var events = page.GetProperty("events").EnumerateArray().ToList();
            Assert.All(events, e => Assert.Equal(name, e.GetProperty("event").GetString()));
            if (events.FirstOrDefault(match) is { ValueKind: JsonValueKind.Object } found)
                return found;
            await Task.Delay(100);
        }
        throw new Xunit.Sdk.XunitException($"no {name} event as expected in the audit log");
    }

    private static string JwtId(string jwt) =>
        JsonDocument.Parse(Convert.FromBase64String(PadBase64(jwt.Split('.')[1].Replace('-', '+').Replace('_', '/')))).RootElement.GetProperty("jti").GetString()!;

    private static string PadBase64(string s) => s + new string('=', (4 - s.Length % 4) % 4);

    internal static async Task<HttpResponseMessage> Exchange(PortcullisServer server, string subjectToken, params (string Key, string Value)[] extra)
    {
        var form = new Dictionary<string, string>
        {
            ["grant_type"] = "urn:ietf:params:oauth:grant-type:token-exchange",
            ["subject_token"] = subjectToken,
            ["subject_token_type"] = "urn:ietf:params:oauth:token-type:jwt",
        };
        foreach (var (key, value) in extra)
            form[key] = value;
        return await server.PostFormAsync("/auth/token", form);
    }

    /// <summary>The answer of a successful exchange; a refusal fails the test with its description.</summary>
    internal static async Task<JsonElement> IssuedAsync(HttpResponseMessage response)
    {
        var body = await response.JsonAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {body}");
        return body;
    }

    internal static async Task<string> AssertInvalidGrantAsync(HttpResponseMessage response)
    {
        using (response)
        {
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            var body = await response.JsonAsync();
            Assert.Equal("invalid_grant", body.GetProperty("error").GetString());
            return body.GetProperty("error_description").GetString()!;
        }
    }
}

/// <summary>Two instances on one PostgreSQL database: a token traded on one cannot be traded again on the other, even at the same moment.</summary>
public sealed class TokenExchangeMultiInstanceTests : IAsyncLifetime
{
    private TestIssuer _issuer = null!;
    private PostgresServer _a = null!;
    private PortcullisServer _b = null!;

    public async Task InitializeAsync()
    {
        _issuer = await TestIssuer.StartAsync();
        _a = new PostgresServer(TrustedIssuerFixture.Settings(_issuer.Url));
        await _a.InitializeAsync();
        _b = await _a.StartSecondInstanceAsync(TrustedIssuerFixture.Settings(_issuer.Url));
        await TrustedIssuerFixture.CreateDeployerAsync(_a);
    }

    public async Task DisposeAsync()
    {
        await _b.DisposeAsync();
        await _a.DisposeAsync();
        await _issuer.DisposeAsync();
    }

    [Fact]
    public async Task OfTwoInstancesGivenTheSameTokenAtOnceExactlyOneTradesIt()
    {
        for (var round = 0; round < 10; round++)
        {
            var token = _issuer.Token(TrustedIssuerFixture.Audience, new() { ["repository"] = "acme/model", ["ref"] = "refs/heads/main" });
            var answers = await Task.WhenAll(TokenExchangeTests.Exchange(_a, token), TokenExchangeTests.Exchange(_b, token));
            Assert.Equal(1, answers.Count(r => r.StatusCode == HttpStatusCode.OK));
            Assert.Equal(1, answers.Count(r => r.StatusCode == HttpStatusCode.BadRequest));
            // The token made on one instance works on the other.
            var issued = (await answers.Single(r => r.StatusCode == HttpStatusCode.OK).JsonAsync()).GetProperty("access_token").GetString()!;
            using var onOther = (answers[0].StatusCode == HttpStatusCode.OK ? _b : _a).Client(issued);
            Assert.Equal(HttpStatusCode.OK, (await onOther.GetAsync("/api/v1/me")).StatusCode);
            foreach (var answer in answers)
                answer.Dispose();
        }
    }
}

/// <summary>The Trusted issuers page in Chromium: an administrator sees the issuer, its rules, and the exchanges and refusals.</summary>
public sealed class TrustedIssuersPageTests(TrustedIssuerFixture fixture, BrowserFixture browser) : IClassFixture<TrustedIssuerFixture>, IClassFixture<BrowserFixture>
{
    [Fact]
    public async Task AnAdministratorSeesTheIssuerItsRulesAndTheRecentExchangesAndRefusals()
    {
        var server = fixture.Server;
        var token = fixture.Issuer.Token(TrustedIssuerFixture.Audience, new() { ["repository"] = "acme/model", ["ref"] = "refs/heads/main" });
        await TokenExchangeTests.IssuedAsync(await TokenExchangeTests.Exchange(server, token));
        await TokenExchangeTests.AssertInvalidGrantAsync(await TokenExchangeTests.Exchange(server, token));

        var page = await (await browser.Browser.NewContextAsync(new BrowserNewContextOptions { BaseURL = server.BaseAddress.ToString() })).NewPageAsync();
        await page.GotoAsync("/login");
        await WebUiTests.LogInAsync(page, "admin", PortcullisServer.AdminPassword);
        await page.GetByRole(AriaRole.Link, new() { Name = "Trusted issuers" }).ClickAsync();
        var issuer = page.GetByRole(AriaRole.Region, new() { Name = "ci" });
        Assert.Contains(fixture.Issuer.Url, await issuer.InnerTextAsync());
        Assert.Contains("main-deploy", await issuer.InnerTextAsync());
        Assert.Contains("'refs/tags/v*'", await issuer.InnerTextAsync());
        Assert.Contains("1 fetched", await issuer.InnerTextAsync());

        var exchanges = page.Locator("table").Nth(1);
        Assert.Contains("repo:acme/model:ref:refs/heads/main", await exchanges.InnerTextAsync());
        Assert.Contains(TrustedIssuerFixture.Deployer, await exchanges.InnerTextAsync());
        // The refusal is written behind its answer: the page shows it once it is in the log.
        for (var attempt = 0; attempt < 50 && !(await page.ContentAsync()).Contains("exchanged already"); attempt++)
        {
            await Task.Delay(100);
            await page.ReloadAsync();
        }
        Assert.Contains("exchanged already", await page.Locator("table").Nth(2).InnerTextAsync());
        Assert.DoesNotContain(token, await page.ContentAsync());
    }
}
