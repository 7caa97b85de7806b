using System.Text.Json;
using Microsoft.Playwright;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// docs/gateway.md, "Service origins", in Debian's Chromium: whatever a service serves cannot act as the person
/// logged in to Portcullis, on the service's own origin or in path mode, and the handshake works for a person
/// who must log in first.
/// </summary>
public sealed class ServiceOriginBrowserTests(GatewayFixture fixture, BrowserFixture browser) : IClassFixture<GatewayFixture>, IClassFixture<BrowserFixture>
{
    private PortcullisServer Server => fixture.Server;

    private string Ui => Server.BaseAddress.ToString().TrimEnd('/');

    private async Task<IBrowserContext> NewContextAsync() =>
        await browser.Browser.NewContextAsync(new BrowserNewContextOptions { BaseURL = Server.BaseAddress.ToString() });

    private static Task LogInAsync(IPage page, string username, string password) => WebUiTests.LogInAsync(page, username, password);

    private static async Task<JsonElement> AttackResultsAsync(IPage page)
    {
        // Polled rather than evaluated: the pages on the way (Portcullis's own) forbid eval by their CSP.
        for (var i = 0; i < 150 && await page.TitleAsync() != "done"; i++)
            await Task.Delay(100);
        Assert.True(await page.TitleAsync() == "done", $"{page.Url}: {await page.ContentAsync()}");
        return JsonDocument.Parse(await page.Locator("#out").TextContentAsync() ?? "{}").RootElement;
    }

    [Fact]
    public async Task AServicePageOnItsOwnOriginCannotReadOrChangeAnythingInPortcullis()
    {
        var (username, password, _) = await Server.CreateUserAsync(admin: true);
        await using var context = await NewContextAsync();
        var page = await context.NewPageAsync();

        // Must log in first: the service origin → the UI's login → back to the very page.
        var evil = $"http://raw--1.localhost:{Server.BaseAddress.Port}/evil?ui={Uri.EscapeDataString(Ui)}";
        await page.GotoAsync(evil);
        Assert.Contains("/login?returnUrl=", page.Url);
        await LogInAsync(page, username, password);
        var results = await AttackResultsAsync(page);
        Assert.Equal(evil, page.Url);
        await page.ScreenshotAsync(new() { Path = Path.Combine(BrowserFixture.Screenshots, "service-origin-attack.png") });

        Assert.Equal("blocked", results.GetProperty("readTokens").GetString());
        Assert.Equal("blocked", results.GetProperty("createToken").GetString());
        // The relative fetch goes to the service itself (its own /tokens), never to Portcullis.
        Assert.StartsWith("http://raw--1.localhost", results.GetProperty("origin").GetString());

        // A cookie the page sets stays on its own host: the UI session is untouched and still works.
        var uiCookies = await context.CookiesAsync([Ui]);
        Assert.DoesNotContain(uiCookies, c => c.Value == "planted");
        await page.GotoAsync("/tokens");
        Assert.EndsWith("/tokens", page.Url);
        Assert.DoesNotContain("stolen", await page.ContentAsync());
    }

    [Fact]
    public async Task APageLoadedInPathModeRunsSandboxedAndABrowserIsSentToTheServiceOrigin()
    {
        var (username, password, token) = await Server.CreateUserAsync(admin: true);
        await using var context = await NewContextAsync();
        var page = await context.NewPageAsync();
        await page.GotoAsync("/login");
        await LogInAsync(page, username, password);

        // A person following a link into path mode lands on the service's own origin.
        await page.GotoAsync($"/services/raw_1/evil?ui={Uri.EscapeDataString(Ui)}");
        await AttackResultsAsync(page);
        Assert.StartsWith($"http://raw--1.localhost:{Server.BaseAddress.Port}/evil", page.Url);

        // Even when the page is served in path mode (here: a browser that sends a token), it runs in an opaque origin.
        await using var withToken = await NewContextAsync();
        // The person's web session too: the page must not be able to use it.
        await withToken.AddCookiesAsync((await context.CookiesAsync([Ui])).Select(c => new Cookie
            { Name = c.Name, Value = c.Value, Domain = c.Domain, Path = c.Path, HttpOnly = c.HttpOnly, SameSite = c.SameSite }));
        await withToken.SetExtraHTTPHeadersAsync([new("Authorization", "Bearer " + token)]);
        var sandboxed = await withToken.NewPageAsync();
        await sandboxed.GotoAsync($"/services/raw_1/evil?ui={Uri.EscapeDataString(Ui)}");
        Assert.Contains("/services/raw_1/evil", sandboxed.Url);
        var results = await AttackResultsAsync(sandboxed);
        Assert.Equal("null", results.GetProperty("origin").GetString());
        Assert.Equal("blocked", results.GetProperty("readTokens").GetString());
        Assert.Equal("blocked", results.GetProperty("readRelative").GetString());
        Assert.Equal("blocked", results.GetProperty("createToken").GetString());
        Assert.Equal("blocked", results.GetProperty("cookie").GetString());
        Assert.DoesNotContain(await withToken.CookiesAsync([Ui]), c => c.Value == "planted");
    }

    [Fact]
    public async Task LoggingOutInTheUiEndsAccessOnTheServiceOrigin()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        await using var context = await NewContextAsync();
        var page = await context.NewPageAsync();
        await page.GotoAsync("/login");
        await LogInAsync(page, username, password);
        var service = $"http://echo.localhost:{Server.BaseAddress.Port}/hello";
        await page.GotoAsync(service);
        Assert.Equal(service, page.Url);
        Assert.Contains(username, await page.ContentAsync());

        await page.GotoAsync("/");
        await page.GetByRole(AriaRole.Button, new() { Name = "Log out" }).ClickAsync();
        await page.GetByRole(AriaRole.Button, new() { Name = "Log in" }).WaitForAsync();
        Assert.EndsWith("/login", page.Url);
        await page.GotoAsync(service);
        Assert.Contains("/login?returnUrl=", page.Url);
    }
}
