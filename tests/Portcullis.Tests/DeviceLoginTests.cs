using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using Portcullis.Tests.Infrastructure;
using static Portcullis.Tests.Infrastructure.OAuthHelpers;

namespace Portcullis.Tests;

/// <summary>A server whose device logins may be polled every second (the default is 5 s).</summary>
public sealed class DeviceLoginServer() : PortcullisServer(Provider.Sqlite, new() { ["Auth:DeviceCodePollInterval"] = "00:00:01" });

/// <summary>A server whose device codes live two seconds, three at a time per address.</summary>
public sealed class ShortDeviceCodeServer() : PortcullisServer(Provider.Sqlite,
    new() { ["Auth:DeviceCodeLifetime"] = "00:00:02", ["Auth:DeviceCodePollInterval"] = "00:00:01", ["Auth:MaxPendingDeviceCodesPerAddress"] = "3" });

/// <summary>Shared steps of a device login (docs/decisions.md, "Logging in from a terminal with a browser") for the tests.</summary>
public static partial class DeviceLogin
{
    public const string GrantType = "urn:ietf:params:oauth:grant-type:device_code";

    [GeneratedRegex("^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")]
    public static partial Regex UserCodePattern();

    public static async Task<JsonElement> StartAsync(PortcullisServer server, string? scope = "api services", string deviceName = "build-box")
    {
        var form = new List<KeyValuePair<string, string>> { new("client_id", "portcullis-cli"), new("device_name", deviceName) };
        if (scope is not null)
            form.Add(new("scope", scope));
        using var response = await server.PostFormAsync("/auth/device", form);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("no-store", response.Headers.CacheControl?.ToString());
        return await response.JsonAsync();
    }

    public static async Task<(HttpStatusCode Status, JsonElement Body)> PollAsync(PortcullisServer server, string deviceCode, string clientId = "portcullis-cli")
    {
        using var response = await server.PostFormAsync("/auth/token", [new("grant_type", GrantType), new("device_code", deviceCode), new("client_id", clientId)]);
        return (response.StatusCode, await response.JsonAsync());
    }

    public static string Error(JsonElement body) => body.GetProperty("error").GetString()!;

    /// <summary>Polls at the server's interval until the answer is no longer authorization_pending (at most 20 s).</summary>
    public static async Task<(HttpStatusCode Status, JsonElement Body)> PollUntilDecidedAsync(PortcullisServer server, string deviceCode)
    {
        for (var i = 0; i < 20; i++)
        {
            await Task.Delay(1100);
            var (status, body) = await PollAsync(server, deviceCode);
            if (status != HttpStatusCode.BadRequest || Error(body) != "authorization_pending")
                return (status, body);
        }
        throw new TimeoutException("the device login stayed pending");
    }

    /// <summary>
    /// A person with a web session (over HTTP) follows the code's link (which only fills the form in) and submits the code;
    /// returns the answer, the login's page when the code is right.
    /// </summary>
    public static async Task<(HttpResponseMessage Page, string Html)> OpenAsync(Browser person, string userCode)
    {
        var form = await person.GetAsync("/device?user_code=" + Uri.EscapeDataString(userCode));
        Assert.Equal(HttpStatusCode.OK, form.StatusCode);
        var html = await form.Content.ReadAsStringAsync();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/device")
        {
            Content = new FormUrlEncodedContent([new("csrf_token", Browser.CsrfToken(html)), new("user_code", userCode)]),
        };
        var page = await person.SendAsync(request);
        return (page, await page.Content.ReadAsStringAsync());
    }

    /// <summary>Submits the approval form (or, with <paramref name="action"/> "deny", denies).</summary>
    public static async Task<HttpResponseMessage> DecideAsync(Browser person, string html, string userCode, string action = "approve",
        params (string Name, string Value)[] fields)
    {
        var form = new List<KeyValuePair<string, string>> { new("csrf_token", Browser.CsrfToken(html)), new("user_code", userCode) };
        var chosen = fields.Length > 0 ? fields : [("name", "cli on build-box"), ("expiration", "30"), ("api", "on"), ("services", "on"), ("service_choice", "all")];
        form.AddRange(chosen.Select(f => new KeyValuePair<string, string>(f.Name, f.Value)));
        using var request = new HttpRequestMessage(HttpMethod.Post, "/device/" + action) { Content = new FormUrlEncodedContent(form) };
        return await person.SendAsync(request);
    }

    /// <summary>A person logged in over HTTP.</summary>
    public static async Task<Browser> PersonAsync(PortcullisServer server, string username, string password)
    {
        var person = new Browser(server.BaseAddress);
        var login = await person.LogInAsync(username, password);
        Assert.Equal(HttpStatusCode.SeeOther, login.StatusCode);
        return person;
    }
}

/// <summary>
/// The device authorization grant (RFC 8628) end to end against a real server: starting a login, polling, approving and
/// denying at /device over HTTP and in Chromium, throttled code guessing, and the audit trail.
/// </summary>
public sealed class DeviceLoginTests(DeviceLoginServer server, BrowserFixture browser) : IClassFixture<DeviceLoginServer>, IClassFixture<BrowserFixture>
{
    private string Base => server.BaseAddress.ToString().TrimEnd('/');

    [Fact]
    public async Task StartingALoginGivesACodeToTypeAndASecretToPollWith()
    {
        var first = await DeviceLogin.StartAsync(server);
        var userCode = first.GetProperty("user_code").GetString()!;
        Assert.Matches(DeviceLogin.UserCodePattern(), userCode);
        Assert.Equal(43, first.GetProperty("device_code").GetString()!.Length);
        Assert.Equal(Base + "/device", first.GetProperty("verification_uri").GetString());
        Assert.Equal(Base + "/device?user_code=" + userCode, first.GetProperty("verification_uri_complete").GetString());
        Assert.Equal(600, first.GetProperty("expires_in").GetInt32());
        Assert.Equal(1, first.GetProperty("interval").GetInt32());

        var second = await DeviceLogin.StartAsync(server);
        Assert.NotEqual(userCode, second.GetProperty("user_code").GetString());
        Assert.NotEqual(first.GetProperty("device_code").GetString(), second.GetProperty("device_code").GetString());

        // Only Portcullis's CLI client, without a secret, with known scopes.
        async Task<(HttpStatusCode, string)> RefusedAsync(params (string, string)[] form)
        {
            using var response = await server.PostFormAsync("/auth/device", form.Select(f => new KeyValuePair<string, string>(f.Item1, f.Item2)));
            return (response.StatusCode, DeviceLogin.Error(await response.JsonAsync()));
        }
        Assert.Equal((HttpStatusCode.BadRequest, "invalid_request"), await RefusedAsync());
        Assert.Equal((HttpStatusCode.BadRequest, "invalid_client"), await RefusedAsync(("client_id", "client-somebody")));
        Assert.Equal((HttpStatusCode.BadRequest, "unauthorized_client"), await RefusedAsync(("client_id", "portcullis")));
        Assert.Equal((HttpStatusCode.BadRequest, "invalid_scope"), await RefusedAsync(("client_id", "portcullis-cli"), ("scope", "everything")));
        Assert.Equal((HttpStatusCode.BadRequest, "invalid_request"), await RefusedAsync(("client_id", "portcullis-cli"), ("client_secret", "pcc_x")));
        Assert.Equal((HttpStatusCode.BadRequest, "invalid_request"), await RefusedAsync(("client_id", "portcullis-cli"), ("device_name", new string('x', 65))));
        Assert.Equal(HttpStatusCode.MethodNotAllowed, (await server.Client().GetAsync("/auth/device")).StatusCode);
    }

    [Fact]
    public async Task PollingTooOftenIsToldToSlowDownAndTheIntervalGrowsEachTime()
    {
        var start = await DeviceLogin.StartAsync(server);
        var deviceCode = start.GetProperty("device_code").GetString()!;
        var (status, body) = await DeviceLogin.PollAsync(server, deviceCode);
        Assert.Equal((HttpStatusCode.BadRequest, "authorization_pending"), (status, DeviceLogin.Error(body)));
        (status, body) = await DeviceLogin.PollAsync(server, deviceCode);
        Assert.Equal((HttpStatusCode.BadRequest, "slow_down"), (status, DeviceLogin.Error(body)));
        Assert.Contains("6 seconds", body.GetProperty("error_description").GetString());
        (_, body) = await DeviceLogin.PollAsync(server, deviceCode);
        Assert.Equal("slow_down", DeviceLogin.Error(body));
        Assert.Contains("11 seconds", body.GetProperty("error_description").GetString());

        Assert.Equal("invalid_grant", DeviceLogin.Error((await DeviceLogin.PollAsync(server, "not-a-device-code")).Body));
        using (var withSecret = await server.PostFormAsync("/auth/token",
                   [new("grant_type", DeviceLogin.GrantType), new("device_code", deviceCode), new("client_id", "portcullis-cli"), new("client_secret", "x")]))
            Assert.Equal("invalid_request", DeviceLogin.Error(await withSecret.JsonAsync()));
        var (wrongClient, refusal) = await DeviceLogin.PollAsync(server, deviceCode, clientId: "portcullis");
        Assert.Equal((HttpStatusCode.BadRequest, "unauthorized_client"), (wrongClient, DeviceLogin.Error(refusal)));
    }

    [Fact]
    public async Task AnApprovedLoginHandsTheChosenTokenOverOnceAndItIsAnOrdinaryToken()
    {
        var (username, password, _) = await server.CreateUserAsync();
        var start = await DeviceLogin.StartAsync(server, deviceName: "laptop-17");
        var (userCode, deviceCode) = (start.GetProperty("user_code").GetString()!, start.GetProperty("device_code").GetString()!);

        // The link of verification_uri_complete leads through the login page back to the code's form, filled in.
        using var person = new Browser(server.BaseAddress);
        var (redirect, _) = await person.FollowAsync(new Uri(start.GetProperty("verification_uri_complete").GetString()!).PathAndQuery);
        Assert.Contains("Log in to Portcullis", await redirect.Content.ReadAsStringAsync());
        var login = await person.LogInAsync(username, password, returnUrl: "/device?user_code=" + userCode);
        Assert.Equal("/device?user_code=" + userCode, login.Headers.Location?.OriginalString);
        var prefilled = await (await person.GetAsync(login.Headers.Location!.OriginalString)).Content.ReadAsStringAsync();
        Assert.Contains($"value=\"{userCode}\"", prefilled);
        Assert.DoesNotContain("laptop-17", prefilled);

        var (page, html) = await DeviceLogin.OpenAsync(person, userCode);
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal("DENY", page.Headers.GetValues("X-Frame-Options").Single());
        Assert.Contains(userCode, html);
        Assert.Contains("portcullis login on laptop-17", html);
        Assert.Contains("127.0.0.1", html);
        Assert.Contains("value=\"cli on laptop-17\"", html);
        Assert.Contains("Approve only a login you started yourself", html);

        // The form without its antiforgery token is refused, and nothing is decided.
        using (var forged = new HttpRequestMessage(HttpMethod.Post, "/device/approve")
               { Content = new FormUrlEncodedContent([new("user_code", userCode), new("name", "x"), new("expiration", "7"), new("api", "on")]) })
            Assert.Equal(HttpStatusCode.BadRequest, (await person.SendAsync(forged)).StatusCode);
        Assert.Equal("authorization_pending", DeviceLogin.Error((await DeviceLogin.PollAsync(server, deviceCode)).Body));

        var approved = await DeviceLogin.DecideAsync(person, html, userCode, "approve", ("name", "laptop cli"), ("description", "from the device page"),
            ("expiration", "7"), ("api", "on"), ("services", "on"), ("service_choice", "all"));
        Assert.Equal(HttpStatusCode.OK, approved.StatusCode);
        Assert.Contains("Device approved", await approved.Content.ReadAsStringAsync());
        // A second click (another tab, another instance) is told the login is over; it is no wrong code.
        var twice = await DeviceLogin.DecideAsync(person, html, userCode, "deny");
        Assert.Equal(HttpStatusCode.Conflict, twice.StatusCode);
        Assert.Contains("This login is over", await twice.Content.ReadAsStringAsync());

        // Until collected, the token waits sealed: the database does not hold it in clear.
        var stored = (string)(await server.ScalarAsync("SELECT sealed_token FROM device_codes WHERE user_code = @c", ("c", userCode.Replace("-", ""))))!;
        Assert.StartsWith("sealed:v1:", stored);

        var (status, body) = await DeviceLogin.PollUntilDecidedAsync(server, deviceCode);
        Assert.Equal(HttpStatusCode.OK, status);
        var token = body.GetProperty("access_token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        Assert.StartsWith("pcp_", token);
        Assert.DoesNotContain(token, stored);
        Assert.Equal("Bearer", body.GetProperty("token_type").GetString());
        Assert.Equal("api services", body.GetProperty("scope").GetString());
        Assert.InRange(body.GetProperty("expires_in").GetInt32(), 7 * 86400 - 120, 7 * 86400);

        using var asToken = server.Client(token);
        var me = await (await asToken.GetAsync("/api/v1/me")).JsonAsync();
        Assert.Equal(username, me.GetProperty("username").GetString());
        var listed = (await (await asToken.GetAsync("/api/v1/tokens")).JsonAsync()).EnumerateArray().Single(t => t.GetProperty("name").GetString() == "laptop cli");
        Assert.Equal("from the device page", listed.GetProperty("description").GetString());

        // Once: a second poll finds nothing, and the code is gone.
        Assert.Equal("invalid_grant", DeviceLogin.Error((await DeviceLogin.PollAsync(server, deviceCode)).Body));
        var again = await DeviceLogin.DecideAsync(person, html, userCode);
        Assert.Equal(HttpStatusCode.BadRequest, again.StatusCode);
        Assert.Contains("No login is waiting for this code", await again.Content.ReadAsStringAsync());

        using var admin = server.Client(await server.AdminTokenAsync());
        var events = (await (await admin.GetAsync("/api/v1/audit?limit=200")).JsonAsync()).GetProperty("events").EnumerateArray()
            .Select(e => e.GetProperty("event").GetString()).ToHashSet();
        Assert.Superset(new HashSet<string?> { "device.started", "device.approved", "device.collected", "token.created" }, events);
    }

    [Fact]
    public async Task ADeniedLoginIsToldAccessDeniedOnceAndNothingIsCreated()
    {
        var (username, password, token) = await server.CreateUserAsync();
        var start = await DeviceLogin.StartAsync(server);
        var (userCode, deviceCode) = (start.GetProperty("user_code").GetString()!, start.GetProperty("device_code").GetString()!);
        using var person = await DeviceLogin.PersonAsync(server, username, password);
        var (_, html) = await DeviceLogin.OpenAsync(person, userCode);
        var denied = await DeviceLogin.DecideAsync(person, html, userCode, "deny");
        Assert.Equal(HttpStatusCode.OK, denied.StatusCode);
        Assert.Contains("Device login denied", await denied.Content.ReadAsStringAsync());

        var (status, body) = await DeviceLogin.PollUntilDecidedAsync(server, deviceCode);
        Assert.Equal((HttpStatusCode.BadRequest, "access_denied"), (status, DeviceLogin.Error(body)));
        Assert.Equal("invalid_grant", DeviceLogin.Error((await DeviceLogin.PollAsync(server, deviceCode)).Body));
        // The person's only token is the one made with the account.
        using var own = server.Client(token);
        Assert.Single((await (await own.GetAsync("/api/v1/tokens")).JsonAsync()).EnumerateArray());
        // Approving after the denial is too late.
        Assert.Equal(HttpStatusCode.BadRequest, (await DeviceLogin.DecideAsync(person, html, userCode)).StatusCode);
    }

    [Fact]
    public async Task GuessingCodesIsThrottledPerAccountLikePasswords()
    {
        var (username, password, _) = await server.CreateUserAsync();
        var start = await DeviceLogin.StartAsync(server);
        var userCode = start.GetProperty("user_code").GetString()!;
        using var person = await DeviceLogin.PersonAsync(server, username, password);
        // Auth:MaxFailedLoginsPerUser (10) wrong codes, each answered with the form again; a right code in between (which
        // anyone can make) does not start the count afresh.
        for (var i = 0; i < 10; i++)
        {
            if (i == 5)
                Assert.Equal(HttpStatusCode.OK, (await DeviceLogin.OpenAsync(person, userCode)).Page.StatusCode);
            var (page, html) = await DeviceLogin.OpenAsync(person, $"BBBB-BBB{"CDFGHJKLMN"[i]}");
            Assert.Equal(HttpStatusCode.BadRequest, page.StatusCode);
            Assert.Contains("No login is waiting for this code", html);
        }
        // Then even the right code is refused until the window ends: guessing cannot go on.
        var (refused, text) = await DeviceLogin.OpenAsync(person, userCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.True(refused.Headers.RetryAfter?.Delta > TimeSpan.Zero);
        Assert.Contains("Try again in", text);
        // Another person is not affected; lower case without the dash is the same code.
        var (other, otherPassword, _) = await server.CreateUserAsync();
        using var someoneElse = await DeviceLogin.PersonAsync(server, other, otherPassword);
        var (ok, _) = await DeviceLogin.OpenAsync(someoneElse, userCode.Replace("-", "").ToLowerInvariant());
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
    }

    [Fact]
    public async Task TheDevicePageNeedsAWebSessionAndNeverAnswersProgramsWithAPage()
    {
        using var anonymous = new Browser(server.BaseAddress);
        var response = await anonymous.GetAsync("/device?user_code=BBBB-CCCC");
        Assert.Equal(HttpStatusCode.Redirect, response.StatusCode);
        Assert.Equal("/login?returnUrl=" + Uri.EscapeDataString("/device?user_code=BBBB-CCCC"), response.Headers.Location?.OriginalString);

        using var program = server.Client(await server.AdminTokenAsync());
        var answer = await program.GetAsync("/device");
        Assert.NotEqual(HttpStatusCode.OK, answer.StatusCode);
        Assert.DoesNotContain("<html", await answer.Content.ReadAsStringAsync());

        // A post that is not the page's form is a 400, never a 500; a login that ended mid-decision comes back to the form.
        using var person = await DeviceLogin.PersonAsync(server, "admin", PortcullisServer.AdminPassword);
        var html = await (await person.GetAsync("/device")).Content.ReadAsStringAsync();
        using var notAForm = new HttpRequestMessage(HttpMethod.Post, "/device/approve") { Content = new StringContent("hello") };
        notAForm.Headers.Add("X-CSRF-Token", Browser.CsrfToken(html));
        Assert.Equal(HttpStatusCode.BadRequest, (await person.SendAsync(notAForm)).StatusCode);
        var back = await person.GetAsync("/device/approve");
        Assert.Equal("/device", back.Headers.Location?.OriginalString);
    }

    [Fact]
    public async Task AdminAskedForByTheRequestIsNeverTickedForThePerson()
    {
        var start = await DeviceLogin.StartAsync(server, scope: "admin api services", deviceName: "your-laptop");
        using var admin = await DeviceLogin.PersonAsync(server, "admin", PortcullisServer.AdminPassword);
        var (page, html) = await DeviceLogin.OpenAsync(admin, start.GetProperty("user_code").GetString()!);
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Matches("id=\"scope-admin\"[^>]*>", html);
        Assert.DoesNotMatch("id=\"scope-admin\"[^>]*checked", html);
        Assert.Matches("id=\"scope-api\"[^>]*checked", html);

        // Device names that could read otherwise on the page are refused.
        using var bidi = await server.PostFormAsync("/auth/device", [new("client_id", "portcullis-cli"), new("device_name", "a\u202egnp.exe")]);
        Assert.Equal(HttpStatusCode.BadRequest, bidi.StatusCode);
    }

    [Fact]
    public async Task PollsAtTheSameMomentGetTheTokenOnceAndNeverAnError()
    {
        var (username, password, _) = await server.CreateUserAsync();
        var start = await DeviceLogin.StartAsync(server);
        var (userCode, deviceCode) = (start.GetProperty("user_code").GetString()!, start.GetProperty("device_code").GetString()!);
        using var person = await DeviceLogin.PersonAsync(server, username, password);
        var (_, html) = await DeviceLogin.OpenAsync(person, userCode);
        Assert.Equal(HttpStatusCode.OK, (await DeviceLogin.DecideAsync(person, html, userCode)).StatusCode);
        await Task.Delay(1100);
        var polls = await Task.WhenAll(Enumerable.Range(0, 6).Select(_ => DeviceLogin.PollAsync(server, deviceCode)));
        Assert.Single(polls, p => p.Status == HttpStatusCode.OK);
        PortcullisServer.Secrets.Add(polls.Single(p => p.Status == HttpStatusCode.OK).Body.GetProperty("access_token").GetString()!);
        Assert.All(polls.Where(p => p.Status != HttpStatusCode.OK), p => Assert.Equal((HttpStatusCode.BadRequest, "invalid_grant"), (p.Status, DeviceLogin.Error(p.Body))));
    }

    [Fact]
    public async Task APersonApprovesAndDeniesInChromium()
    {
        var (username, password, _) = await server.CreateUserAsync();
        var start = await DeviceLogin.StartAsync(server, deviceName: "ci-runner");
        var context = await browser.Browser.NewContextAsync(new BrowserNewContextOptions { BaseURL = Base });
        var page = await context.NewPageAsync();
        await page.GotoAsync(start.GetProperty("verification_uri_complete").GetString()!);
        await WebUiTests.LogInAsync(page, username, password);
        Assert.Equal(start.GetProperty("user_code").GetString(), await page.GetByLabel("Code").InputValueAsync());
        await page.GetByRole(AriaRole.Button, new() { Name = "Continue" }).ClickAsync();
        await page.GetByRole(AriaRole.Heading, new() { Name = "Approve a device login" }).WaitForAsync();
        Assert.Contains(start.GetProperty("user_code").GetString()!, await page.InnerTextAsync("main"));
        Assert.Equal("cli on ci-runner", await page.GetByLabel("Name").InputValueAsync());
        await page.GetByLabel("Name").FillAsync("ci runner, api only");
        await page.GetByLabel("Protected Endpoint Access").UncheckAsync();
        await page.GetByRole(AriaRole.Button, new() { Name = "Approve" }).ClickAsync();
        await page.GetByRole(AriaRole.Heading, new() { Name = "Device approved" }).WaitForAsync();
        var (status, body) = await DeviceLogin.PollUntilDecidedAsync(server, start.GetProperty("device_code").GetString()!);
        Assert.Equal(HttpStatusCode.OK, status);
        PortcullisServer.Secrets.Add(body.GetProperty("access_token").GetString()!);
        Assert.Equal("api", body.GetProperty("scope").GetString());

        // A second login: the code typed by hand, in lower case and without its dash, then denied.
        var second = await DeviceLogin.StartAsync(server);
        await page.GotoAsync("/device");
        await page.GetByLabel("Code").FillAsync(second.GetProperty("user_code").GetString()!.Replace("-", "").ToLowerInvariant());
        await page.GetByRole(AriaRole.Button, new() { Name = "Continue" }).ClickAsync();
        await page.GetByRole(AriaRole.Button, new() { Name = "Deny" }).ClickAsync();
        await page.GetByRole(AriaRole.Heading, new() { Name = "Device login denied" }).WaitForAsync();
        (status, body) = await DeviceLogin.PollUntilDecidedAsync(server, second.GetProperty("device_code").GetString()!);
        Assert.Equal("access_denied", DeviceLogin.Error(body));
        await context.CloseAsync();
    }
}

/// <summary>Device codes end: an expired one is said so to the terminal, and the page no longer knows it.</summary>
public sealed class DeviceCodeExpiryTests(ShortDeviceCodeServer server) : IClassFixture<ShortDeviceCodeServer>
{
    [Fact]
    public async Task AnExpiredCodeAnswersExpiredTokenAndCannotBeApproved()
    {
        var start = await DeviceLogin.StartAsync(server);
        Assert.Equal(2, start.GetProperty("expires_in").GetInt32());
        await Task.Delay(2500);
        var (status, body) = await DeviceLogin.PollAsync(server, start.GetProperty("device_code").GetString()!);
        Assert.Equal((HttpStatusCode.BadRequest, "expired_token"), (status, DeviceLogin.Error(body)));

        var (username, password, _) = await server.CreateUserAsync();
        using var person = await DeviceLogin.PersonAsync(server, username, password);
        var (page, html) = await DeviceLogin.OpenAsync(person, start.GetProperty("user_code").GetString()!);
        Assert.Equal(HttpStatusCode.Conflict, page.StatusCode);
        Assert.Contains("This login is over", html);
    }

    [Fact]
    public async Task ATokenApprovedButNeverCollectedEndsWithItsLogin()
    {
        var (username, password, token) = await server.CreateUserAsync();
        using var person = await DeviceLogin.PersonAsync(server, username, password);
        var start = await DeviceLogin.StartAsync(server);
        var userCode = start.GetProperty("user_code").GetString()!;
        var (_, html) = await DeviceLogin.OpenAsync(person, userCode);
        Assert.Equal(HttpStatusCode.OK, (await DeviceLogin.DecideAsync(person, html, userCode, "approve", ("name", "never collected"), ("expiration", "7"), ("api", "on"))).StatusCode);
        // Twice the code's lifetime after it ended, the next login forgets it, and revokes the token nobody collected.
        await Task.Delay(6500);
        await DeviceLogin.StartAsync(server);
        using var own = server.Client(token);
        var tokens = await (await own.GetAsync("/api/v1/tokens")).JsonAsync();
        Assert.Equal("revoked", tokens.EnumerateArray().Single(t => t.GetProperty("name").GetString() == "never collected").GetProperty("status").GetString());
        Assert.Equal("invalid_grant", DeviceLogin.Error((await DeviceLogin.PollAsync(server, start.GetProperty("device_code").GetString()!)).Body));
    }

    [Fact]
    public async Task ALoginApprovedJustBeforeItsCodeExpiredIsStillHandedOver()
    {
        var (username, password, _) = await server.CreateUserAsync();
        using var person = await DeviceLogin.PersonAsync(server, username, password);
        var start = await DeviceLogin.StartAsync(server);
        var userCode = start.GetProperty("user_code").GetString()!;
        var (_, html) = await DeviceLogin.OpenAsync(person, userCode);
        Assert.Equal(HttpStatusCode.OK, (await DeviceLogin.DecideAsync(person, html, userCode)).StatusCode);
        await Task.Delay(2500);
        var (status, body) = await DeviceLogin.PollAsync(server, start.GetProperty("device_code").GetString()!);
        Assert.Equal(HttpStatusCode.OK, status);
        PortcullisServer.Secrets.Add(body.GetProperty("access_token").GetString()!);
    }

    [Fact]
    public async Task AnAddressMayHaveOnlySoManyCodesWaitingAtOnce()
    {
        // Let the codes of other tests end first.
        await Task.Delay(2100);
        for (var i = 0; i < 3; i++)
            await DeviceLogin.StartAsync(server);
        using var refused = await server.PostFormAsync("/auth/device", [new("client_id", "portcullis-cli")]);
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Equal("temporarily_unavailable", DeviceLogin.Error(await refused.JsonAsync()));
        Assert.InRange(refused.Headers.RetryAfter!.Delta!.Value.TotalSeconds, 1, 2);
        await Task.Delay(2100);
        await DeviceLogin.StartAsync(server);
    }
}

/// <summary>A PostgreSQL server whose device logins may be polled every second.</summary>
public sealed class DeviceLoginPostgresServer() : PortcullisServer(Provider.Postgres, new() { ["Auth:DeviceCodePollInterval"] = "00:00:01" });

/// <summary>Two instances on one PostgreSQL database, as behind a load balancer: every step of a device login may land on either.</summary>
public sealed class DeviceLoginMultiInstanceTests(DeviceLoginPostgresServer a) : IClassFixture<DeviceLoginPostgresServer>, IAsyncLifetime
{
    private PortcullisServer _b = null!;

    public async Task InitializeAsync()
    {
        _b = await a.StartSecondInstanceAsync(new() { ["Auth:DeviceCodePollInterval"] = "00:00:01" });
    }

    public async Task DisposeAsync() => await _b.DisposeAsync();

    [Fact]
    public async Task ACodeMadeOnOneInstanceIsApprovedOnTheOtherAndCollectedOnceFromEither()
    {
        var (username, password, _) = await a.CreateUserAsync();
        var start = await DeviceLogin.StartAsync(a);
        var (userCode, deviceCode) = (start.GetProperty("user_code").GetString()!, start.GetProperty("device_code").GetString()!);
        Assert.Equal("authorization_pending", DeviceLogin.Error((await DeviceLogin.PollAsync(_b, deviceCode)).Body));

        using var person = await DeviceLogin.PersonAsync(_b, username, password);
        var (page, html) = await DeviceLogin.OpenAsync(person, userCode);
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await DeviceLogin.DecideAsync(person, html, userCode)).StatusCode);

        // Sealed on B with the key-encryption key both share, collected on A, and then gone for B too.
        var (status, body) = await DeviceLogin.PollUntilDecidedAsync(a, deviceCode);
        Assert.Equal(HttpStatusCode.OK, status);
        var token = body.GetProperty("access_token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        Assert.Equal("invalid_grant", DeviceLogin.Error((await DeviceLogin.PollAsync(_b, deviceCode)).Body));
        using var onB = _b.Client(token);
        Assert.Equal(username, (await (await onB.GetAsync("/api/v1/me")).JsonAsync()).GetProperty("username").GetString());
    }

    [Fact]
    public async Task GuessingIsCountedAcrossInstances()
    {
        var (username, password, _) = await a.CreateUserAsync();
        var start = await DeviceLogin.StartAsync(_b);
        using var onA = await DeviceLogin.PersonAsync(a, username, password);
        using var onB = await DeviceLogin.PersonAsync(_b, username, password);
        for (var i = 0; i < 10; i++)
        {
            var (page, _) = await DeviceLogin.OpenAsync(i % 2 == 0 ? onA : onB, $"CCCC-CCC{"BDFGHJKLMN"[i]}");
            Assert.Equal(HttpStatusCode.BadRequest, page.StatusCode);
        }
        var (refused, _) = await DeviceLogin.OpenAsync(onA, start.GetProperty("user_code").GetString()!);
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        (refused, _) = await DeviceLogin.OpenAsync(onB, start.GetProperty("user_code").GetString()!);
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
    }
}
