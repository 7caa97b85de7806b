using System.Net;
using System.Text.Json;
using Microsoft.Playwright;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>SPEC §9 in a real browser: Debian's Chromium against a real portcullis process.</summary>
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

    private static async Task LogInAsync(IPage page, string username, string password)
    {
        await page.GetByLabel("Username").FillAsync(username);
        await page.GetByLabel("Password").FillAsync(password);
        await page.GetByRole(AriaRole.Button, new() { Name = "Log in" }).ClickAsync();
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
    public async Task ABrowserOpeningAProtectedServiceLogsInAndComesBack()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        var page = await NewPageAsync();
        await page.GotoAsync("/services/echo_1/dashboard?tab=2");
        Assert.Contains("/login?returnUrl=", page.Url);
        await LogInAsync(page, username, password);
        Assert.EndsWith("/services/echo_1/dashboard?tab=2", page.Url);
        var echo = JsonDocument.Parse(await page.InnerTextAsync("body")).RootElement;
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
