using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>docs/web-ui.md in a real browser: Debian's Chromium against a real portcullis process.</summary>
public sealed class WebUiTests(GatewayFixture fixture, BrowserFixture browser) : IClassFixture<GatewayFixture>, IClassFixture<BrowserFixture>
{
    private PortcullisServer Server => fixture.Server;

    private async Task<IPage> NewPageAsync()
    {
        var context = await browser.Browser.NewContextAsync(new BrowserNewContextOptions
        {
            BaseURL = Server.BaseAddress.ToString(),
            Permissions = ["clipboard-read", "clipboard-write"],
            ViewportSize = new ViewportSize { Width = 1280, Height = 800 },
        });
        return await context.NewPageAsync();
    }

    internal static async Task LogInAsync(IPage page, string username, string password)
    {
        await page.GetByLabel("Username").FillAsync(username);
        await page.GetByLabel("Password").FillAsync(password);
        await page.GetByRole(AriaRole.Button, new() { Name = "Log in" }).ClickAsync();
    }

    /// <summary>
    /// The echo service's answer once the page has arrived at <paramref name="url"/>. It polls the page's address and
    /// then its text, and never waits for a load event: a loaded CI machine has waited 30 s on one after a redirect had
    /// already been followed, and <c>WaitForURLAsync</c> waits for the load event when the address already matches.
    /// </summary>
    internal static async Task<JsonElement> EchoedRequestAtAsync(IPage page, string url)
    {
        await Assertions.Expect(page).ToHaveURLAsync(url);
        await page.Locator("body", new() { HasText = "\"headers\"" }).WaitForAsync();
        return JsonDocument.Parse(await page.InnerTextAsync("body")).RootElement;
    }

    private static Task ScreenshotAsync(IPage page, string name) =>
        page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(BrowserFixture.Screenshots, name + ".png"), FullPage = true });

    [Fact]
    public async Task APersonLogsInGeneratesATokenCopiesAndUsesItThenDeletesIt()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        var page = await NewPageAsync();
        await page.GotoAsync("/tokens");
        Assert.EndsWith("/login?returnUrl=%2Ftokens", page.Url);
        await ScreenshotAsync(page, "login");
        await LogInAsync(page, username, password);
        Assert.EndsWith("/tokens", page.Url);

        await page.GetByRole(AriaRole.Link, new() { Name = "Generate new token" }).ClickAsync();
        await page.GetByLabel("Name", new() { Exact = true }).FillAsync("laptop");
        await page.GetByLabel("Description").FillAsync("My laptop's scripts");
        await page.GetByLabel("Expiration", new() { Exact = true }).SelectOptionAsync("30");
        await ScreenshotAsync(page, "generate-token");
        await page.GetByRole(AriaRole.Button, new() { Name = "Generate token" }).ClickAsync();

        var field = page.GetByLabel("Your new token");
        var token = await field.InputValueAsync();
        PortcullisServer.Secrets.Add(token);
        Assert.Matches("^pcp_[0-9A-Za-z]{36}$", token);
        Assert.True(await field.IsEditableAsync() is false, "the token field must be read-only");
        Assert.DoesNotContain(token, page.Url);
        await page.GetByRole(AriaRole.Button, new() { Name = "Copy" }).ClickAsync();
        await page.GetByRole(AriaRole.Button, new() { Name = "Copied" }).WaitForAsync();
        Assert.Equal(token, await page.EvaluateAsync<string>("navigator.clipboard.readText()"));
        await ScreenshotAsync(page, "token-revealed");

        // The token works for an ordinary HTTP call.
        Assert.Equal(HttpStatusCode.OK, (await Server.Client(token).GetAsync("/api/v1/me")).StatusCode);

        await page.GotoAsync("/tokens");
        var row = page.GetByRole(AriaRole.Row).Filter(new() { HasText = "laptop" });
        Assert.Contains(token[..8], await row.InnerTextAsync());
        Assert.DoesNotContain(token, await page.ContentAsync());
        await ScreenshotAsync(page, "tokens");
        await row.GetByRole(AriaRole.Link, new() { Name = "Delete laptop" }).ClickAsync();
        await ScreenshotAsync(page, "delete-confirm");
        await page.GetByRole(AriaRole.Button, new() { Name = "Delete this token" }).ClickAsync();
        await page.GetByText("was deleted").WaitForAsync();
        Assert.Equal(HttpStatusCode.Unauthorized, (await Server.Client(token).GetAsync("/api/v1/me")).StatusCode);
    }

    [Fact]
    public async Task ATokensPageShowsItsUsageChartLastUseAndEventsAndSoonExpiringTokensStandOut()
    {
        var (username, password, token) = await Server.CreateUserAsync();
        var soon = await Server.CreateTokenAsync(token, new { name = "short-lived", expires_in_days = 3 });
        for (var i = 0; i < 4; i++)
            Assert.Equal(HttpStatusCode.OK, (await Server.Client(token).GetAsync("/api/v1/me")).StatusCode);
        await Task.Delay(600); // usage is written behind (every 0.2 s in the tests)

        var page = await NewPageAsync();
        await page.GotoAsync("/login");
        await LogInAsync(page, username, password);
        await page.GotoAsync("/tokens");
        Assert.Contains("(soon)", await page.GetByRole(AriaRole.Row).Filter(new() { HasText = "short-lived" }).InnerTextAsync());
        Assert.Equal(1, await page.Locator("tr:has-text('short-lived') .soon").CountAsync());

        await page.GetByRole(AriaRole.Link, new() { Name = "default", Exact = true }).ClickAsync();
        Assert.Matches("/tokens/[0-9]+$", page.Url);
        var chart = page.GetByRole(AriaRole.Img, new() { Name = "Requests per day" });
        Assert.Equal(30, await chart.Locator("rect.bar").CountAsync());
        Assert.Contains("5 requests in the last 30 days", await page.ContentAsync()); // one to create short-lived, four to ask who it is
        Assert.Contains("from 127.0.0.1", await page.ContentAsync());
        Assert.Contains("token.created", await page.ContentAsync());
        await ScreenshotAsync(page, "token-detail");
        Assert.DoesNotContain(soon, await page.ContentAsync());
    }

    [Fact]
    public async Task ValidationErrorsAreShownNextToTheirField()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        var page = await NewPageAsync();
        await page.GotoAsync("/login");
        await LogInAsync(page, username, password);
        await page.GotoAsync("/tokens/new");
        await page.GetByLabel("Name", new() { Exact = true }).FillAsync("dated");
        await page.GetByLabel("Expiration", new() { Exact = true }).SelectOptionAsync("custom");
        await page.GetByRole(AriaRole.Button, new() { Name = "Generate token" }).ClickAsync();
        var error = page.Locator("#expiration-error");
        Assert.Contains("custom expiration date", await error.InnerTextAsync());
        Assert.Equal("dated", await page.GetByLabel("Name", new() { Exact = true }).InputValueAsync()); // nothing typed is lost

        await page.GetByLabel("Expiration", new() { Exact = true }).SelectOptionAsync("never");
        await page.GetByLabel("Developer Operations Access").UncheckAsync();
        await page.GetByLabel("Protected Endpoint Access").UncheckAsync();
        await page.GetByRole(AriaRole.Button, new() { Name = "Generate token" }).ClickAsync();
        Assert.Contains("at least one kind of access", await page.Locator("#scopes-error").InnerTextAsync());
        await ScreenshotAsync(page, "validation-error");
    }

    [Fact]
    public async Task TheGenerateFormSetsTheTokensPoliciesWhichItsPageShows()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        var page = await NewPageAsync();
        await page.GotoAsync("/login");
        await LogInAsync(page, username, password);
        await page.GotoAsync("/tokens/new");
        await page.GetByLabel("Name", new() { Exact = true }).FillAsync("fenced");
        await page.GetByLabel("Use limit").FillAsync("3");
        await page.GetByLabel("Allowed addresses").FillAsync("10.0.0.1/8");
        await page.GetByRole(AriaRole.Button, new() { Name = "Generate token" }).ClickAsync();
        Assert.Contains("written 10.0.0.0/8", await page.Locator("#allowed_cidrs-error").InnerTextAsync());
        Assert.Equal("3", await page.GetByLabel("Use limit").InputValueAsync()); // nothing typed is lost

        await page.GetByLabel("Allowed addresses").FillAsync("127.0.0.0/8\n2001:db8::/32");
        await page.GetByLabel("Per minute").FillAsync("0");
        await page.GetByRole(AriaRole.Button, new() { Name = "Generate token" }).ClickAsync();
        Assert.Contains("per_minute must be between 1 and", await page.Locator("#rate_limit-error").InnerTextAsync());
        await page.GetByLabel("Per minute").FillAsync("600");
        await page.GetByRole(AriaRole.Button, new() { Name = "Generate token" }).ClickAsync();
        var token = await page.Locator("#new-token").InputValueAsync();
        PortcullisServer.Secrets.Add(token);
        Assert.Equal(HttpStatusCode.OK, (await Server.Client(token).GetAsync("/api/v1/me")).StatusCode);
        await page.GotoAsync("/tokens");
        await page.GetByRole(AriaRole.Link, new() { Name = "fenced", Exact = true }).ClickAsync();
        var facts = await page.Locator("dl.facts").InnerTextAsync();
        Assert.Contains("1 of 3 used", facts);
        Assert.Contains("127.0.0.0/8, 2001:db8::/32", facts);
        Assert.Contains("600 per minute, on each server", facts);
    }

    [Fact]
    public async Task ATokensPageShowsWhatItUsedAndNarrowsItWithOneButton()
    {
        var (username, password, person) = await Server.CreateUserAsync();
        var created = await (await Server.Client(person).PostAsJsonAsync("/api/v1/tokens", new { name = "wide" })).JsonAsync();
        var token = created.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        Assert.Equal(HttpStatusCode.OK, (await Server.Client(token).GetAsync("/services/echo_1/")).StatusCode);

        var page = await NewPageAsync();
        await page.GotoAsync("/login");
        await LogInAsync(page, username, password);
        var button = page.GetByRole(AriaRole.Button, new() { Name = "Narrow to what it used" });
        // The use is written behind: the page shows it once it is.
        for (var tries = 0; tries < 50 && await button.CountAsync() == 0; tries++)
        {
            await page.GotoAsync($"/tokens/{created.GetProperty("id").GetInt64()}");
            if (await button.CountAsync() == 0)
                await Task.Delay(200);
        }
        Assert.Contains("services:echo: 1 request", await page.Locator(".scope-uses").InnerTextAsync());
        await button.ClickAsync();
        Assert.Contains("narrowed to what it used", await page.GetByRole(AriaRole.Status).InnerTextAsync());
        Assert.Contains("It uses all the access it has", await page.Locator("main").InnerTextAsync());
        Assert.Equal(HttpStatusCode.Forbidden, (await Server.Client(token).GetAsync("/services/secret_1/")).StatusCode);
    }

    [Fact]
    public async Task ABrowserOpeningAProtectedServiceLogsInAndComesBack()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        var page = await NewPageAsync();
        // Path mode sends a browser to the service's own origin, which sends it to log in, and back.
        await page.GotoAsync("/services/echo_1/dashboard?tab=2", new() { WaitUntil = WaitUntilState.Commit });
        await Assertions.Expect(page).ToHaveURLAsync(new Regex("/login\\?returnUrl="));
        await LogInAsync(page, username, password);
        var echo = await EchoedRequestAtAsync(page, $"http://echo--1.localhost:{Server.BaseAddress.Port}/dashboard?tab=2");
        Assert.Equal(username, echo.GetProperty("headers").GetProperty("x-portcullis-user").GetString());
    }

    [Fact]
    public async Task AForgedCrossSiteFormIsRefused()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        var page = await NewPageAsync();
        await page.GotoAsync("/login");
        await LogInAsync(page, username, password);
        // A form without the antiforgery field, posted from the browser that holds the session.
        await page.SetContentAsync($"<form method=post action=\"{Server.BaseAddress}tokens/new\"><input name=name value=evil><input name=api value=on><input name=expiration value=never><button>go</button></form>");
        var response = await page.RunAndWaitForResponseAsync(() => page.ClickAsync("button"), r => r.Url.EndsWith("/tokens/new"));
        Assert.Equal(400, response.Status);
        await page.GotoAsync("/tokens");
        Assert.Equal(0, await page.GetByRole(AriaRole.Row).Filter(new() { HasText = "evil" }).CountAsync());
    }

    [Fact]
    public async Task TheMainPagesReadWellOnAPhone()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        var context = await browser.Browser.NewContextAsync(new BrowserNewContextOptions { BaseURL = Server.BaseAddress.ToString(), ViewportSize = new ViewportSize { Width = 390, Height = 844 } });
        var page = await context.NewPageAsync();
        await page.GotoAsync("/login");
        await LogInAsync(page, username, password);
        await page.GotoAsync("/tokens/new");
        // Nothing wider than the screen: no sideways scrolling of the page itself.
        Assert.True(await page.EvaluateAsync<bool>("document.documentElement.scrollWidth <= window.innerWidth + 1"));
        await ScreenshotAsync(page, "generate-token-phone");
        await page.Keyboard.PressAsync("Tab");
        Assert.NotEqual("BODY", await page.EvaluateAsync<string>("document.activeElement.tagName"));
    }
}

/// <summary>docs/web-ui.md administration in a real browser.</summary>
public sealed class AdminUiTests(GatewayFixture fixture, BrowserFixture browser) : IClassFixture<GatewayFixture>, IClassFixture<BrowserFixture>
{
    private PortcullisServer Server => fixture.Server;

    private async Task<IPage> AdminPageAsync()
    {
        var context = await browser.Browser.NewContextAsync(new BrowserNewContextOptions { BaseURL = Server.BaseAddress.ToString(), ViewportSize = new ViewportSize { Width = 1280, Height = 900 } });
        var page = await context.NewPageAsync();
        await page.GotoAsync("/login");
        await page.GetByLabel("Username").FillAsync("admin");
        await page.GetByLabel("Password").FillAsync(PortcullisServer.AdminPassword);
        await page.GetByRole(AriaRole.Button, new() { Name = "Log in" }).ClickAsync();
        return page;
    }

    private static Task ScreenshotAsync(IPage page, string name) =>
        page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(BrowserFixture.Screenshots, name + ".png"), FullPage = true });

    [Fact]
    public async Task AnAdminCreatesAUserMakesThemAdminResetsTheirPasswordAndDisablesThem()
    {
        var page = await AdminPageAsync();
        await page.GetByRole(AriaRole.Link, new() { Name = "Users" }).ClickAsync();
        var name = "ui-" + Guid.NewGuid().ToString("N")[..8];
        const string password = "ui-password-123456";
        PortcullisServer.Secrets.Add(password);
        await page.GetByLabel("Username").FillAsync(name);
        await page.GetByLabel("Password", new() { Exact = true }).FillAsync(password);
        await page.GetByRole(AriaRole.Button, new() { Name = "Create user" }).ClickAsync();
        await page.GetByText($"User {name} created.").WaitForAsync();
        Assert.Equal(HttpStatusCode.Created, (await Server.Client().PostAsync("/auth/token", JsonBody(name, password))).StatusCode);

        await page.GetByRole(AriaRole.Button, new() { Name = $"Make admin {name}" }).ClickAsync();
        var row = page.GetByRole(AriaRole.Row).Filter(new() { HasText = name });
        Assert.Equal("admin", await row.Locator(".badge.neutral").InnerTextAsync());
        await row.GetByRole(AriaRole.Button, new() { Name = $"Remove admin from {name}" }).WaitForAsync();
        await page.GetByLabel($"New password for {name}").FillAsync(password + "-reset");
        await page.GetByRole(AriaRole.Button, new() { Name = $"Reset password of {name}" }).ClickAsync();
        PortcullisServer.Secrets.Add(password + "-reset");
        Assert.Equal(HttpStatusCode.Created, (await Server.Client().PostAsync("/auth/token", JsonBody(name, password + "-reset"))).StatusCode);
        await page.GetByRole(AriaRole.Button, new() { Name = $"Disable {name}" }).ClickAsync();
        Assert.Equal("Disabled", await row.Locator(".badge.revoked").InnerTextAsync());
        Assert.Equal(HttpStatusCode.BadRequest, (await Server.Client().PostAsync("/auth/token", JsonBody(name, password + "-reset"))).StatusCode);
        await ScreenshotAsync(page, "admin-users");
    }

    [Fact]
    public async Task TheAdminFormsShowABrokenRuleUnderItsFieldAndKeepWhatWasTyped()
    {
        var page = await AdminPageAsync();
        // A username that is taken: the message is under the username, which is still there.
        await page.GotoAsync("/admin/users");
        await page.GetByLabel("Username").FillAsync("admin");
        await page.GetByLabel("Password", new() { Exact = true }).FillAsync("some-password-1234");
        await page.GetByRole(AriaRole.Button, new() { Name = "Create user" }).ClickAsync();
        var usernameError = page.Locator("#username-error");
        await usernameError.WaitForAsync();
        Assert.Contains("admin", await usernameError.InnerTextAsync());
        Assert.Equal("admin", await page.GetByLabel("Username").InputValueAsync());
        Assert.Equal("username-error", await page.GetByLabel("Username").GetAttributeAsync("aria-describedby"));
        Assert.Equal(0, await page.Locator(".notice.error").CountAsync());

        // An upstream that is not a URL: the message is under the upstream, the name and version stay.
        await page.GotoAsync("/admin/services");
        await page.GetByLabel("Service name").FillAsync("kept-name");
        await page.GetByLabel("Version").FillAsync("3");
        await page.GetByLabel("Upstream URL").FillAsync("not a url");
        await page.GetByRole(AriaRole.Button, new() { Name = "Register service" }).ClickAsync();
        await page.Locator("#upstream-error").WaitForAsync();
        Assert.Equal("kept-name", await page.GetByLabel("Service name").InputValueAsync());
        Assert.Equal("3", await page.GetByLabel("Version").InputValueAsync());

        // A scope nobody may grant: under the scopes, with the scopes as typed.
        await page.GotoAsync("/admin/clients");
        await page.GetByLabel("Client name").FillAsync("kept-client");
        await page.GetByLabel("Client scopes (space-separated)").FillAsync("services nonsense");
        await page.GetByRole(AriaRole.Button, new() { Name = "Create client" }).ClickAsync();
        await page.Locator("#scopes-error").WaitForAsync();
        Assert.Equal("services nonsense", await page.GetByLabel("Client scopes (space-separated)").InputValueAsync());
        Assert.Equal("kept-client", await page.GetByLabel("Client name").InputValueAsync());
    }

    [Fact]
    public async Task AnAdminRegistersAServiceCreatesAClientAndReadsTokensAndTheAuditLog()
    {
        var page = await AdminPageAsync();
        await page.GotoAsync("/admin/services");
        var service = "svc-" + Guid.NewGuid().ToString("N")[..6];
        await page.GetByLabel("Service name").FillAsync(service);
        await page.GetByLabel("Version").FillAsync("1.0");
        await page.GetByLabel("Upstream URL").FillAsync(fixture.Upstream.Url + "/echo");
        await page.GetByRole(AriaRole.Button, new() { Name = "Register service" }).ClickAsync();
        await page.GetByText($"Service {service}_1.0 registered.").WaitForAsync();
        Assert.Equal(HttpStatusCode.OK, (await Server.Client(await Server.AdminTokenAsync()).GetAsync($"/services/{service}_1.0/x")).StatusCode);
        await ScreenshotAsync(page, "admin-services");
        await page.GetByRole(AriaRole.Button, new() { Name = $"Remove {service}_1.0" }).ClickAsync();
        await page.GetByText($"Service {service}_1.0 removed.").WaitForAsync();
        Assert.Equal(HttpStatusCode.NotFound, (await Server.Client(await Server.AdminTokenAsync()).GetAsync($"/services/{service}_1.0/x")).StatusCode);

        // Replicas, one of them down: requests still succeed, and the page shows which replica is unhealthy.
        await page.GetByLabel("Service name").FillAsync(service);
        await page.GetByLabel("Version").FillAsync("2.0");
        await page.GetByLabel("Upstream URL").FillAsync($"{fixture.Upstream.Url}/echo http://127.0.0.1:9/echo");
        await page.GetByRole(AriaRole.Button, new() { Name = "Register service" }).ClickAsync();
        await page.GetByText($"Service {service}_2.0 registered.").WaitForAsync();
        using (var admin = Server.Client(await Server.AdminTokenAsync()))
        {
            for (var i = 0; i < 30; i++)
                Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync($"/services/{service}_2.0/x")).StatusCode);
        }
        await page.ReloadAsync();
        var row = page.GetByRole(AriaRole.Row).Filter(new() { HasText = "http://127.0.0.1:9/echo" });
        Assert.Contains("unhealthy", await row.InnerTextAsync());
        await ScreenshotAsync(page, "admin-services-replicas");
        await page.GetByRole(AriaRole.Button, new() { Name = $"Remove {service}_2.0" }).ClickAsync();
        await page.GetByText($"Service {service}_2.0 removed.").WaitForAsync();

        await page.GotoAsync("/admin/clients");
        await page.GetByLabel("Client name").FillAsync("ui-client");
        await page.GetByRole(AriaRole.Button, new() { Name = "Create client" }).ClickAsync();
        var clientId = await page.GetByLabel("Client ID").InputValueAsync();
        var secret = await page.GetByLabel("Client secret").InputValueAsync();
        PortcullisServer.Secrets.Add(secret);
        Assert.StartsWith("pcc_", secret);
        await Server.ClientTokenAsync(new OAuthHelpers.ClientCredentials(clientId, secret));
        await page.ReloadAsync();
        Assert.DoesNotContain(secret, await page.ContentAsync()); // shown once
        await ScreenshotAsync(page, "admin-clients");

        var (owner, _, _) = await Server.CreateUserAsync();
        await page.GotoAsync("/admin/tokens");
        await page.GetByLabel("Owner").FillAsync(owner);
        await page.GetByRole(AriaRole.Button, new() { Name = "Filter" }).ClickAsync();
        var rows = page.GetByRole(AriaRole.Row);
        Assert.Equal(2, await rows.CountAsync()); // the header and the user's one token
        Assert.Contains(owner, await rows.Nth(1).InnerTextAsync());
        await ScreenshotAsync(page, "admin-tokens");

        await page.GotoAsync("/admin/audit?limit=5");
        Assert.Contains("client.created", await page.ContentAsync());
        await page.GetByRole(AriaRole.Link, new() { Name = "Older events" }).ClickAsync();
        Assert.Contains("before=", page.Url);
        await ScreenshotAsync(page, "admin-audit");
    }

    [Fact]
    public async Task PeopleWhoAreNotAdminsGetNoAdministration()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        var context = await browser.Browser.NewContextAsync(new BrowserNewContextOptions { BaseURL = Server.BaseAddress.ToString() });
        var page = await context.NewPageAsync();
        await page.GotoAsync("/login");
        await page.GetByLabel("Username").FillAsync(username);
        await page.GetByLabel("Password").FillAsync(password);
        await page.GetByRole(AriaRole.Button, new() { Name = "Log in" }).ClickAsync();
        Assert.Equal(0, await page.GetByRole(AriaRole.Link, new() { Name = "Users" }).CountAsync());
        var response = await page.GotoAsync("/admin/users");
        Assert.Equal(403, response!.Status);
    }

    private static StringContent JsonBody(string username, string password) =>
        new(JsonSerializer.Serialize(new { username, password }), System.Text.Encoding.UTF8, "application/json");
}
