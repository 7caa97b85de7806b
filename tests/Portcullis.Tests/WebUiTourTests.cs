using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Playwright;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// Every page of docs/web-ui.md, as an administrator sees it, at a desktop and a phone width, in light and in dark:
/// axe-core (from the npm registry, injected by Playwright) finds no serious or critical violation, nothing is wider
/// than a phone's screen, and a screenshot of each is written for review (the main ones are in docs/images).
/// </summary>
public sealed class WebUiTourTests(GatewayFixture fixture, BrowserFixture browser) : IClassFixture<GatewayFixture>, IClassFixture<BrowserFixture>
{
    private const string AxeVersion = "4.11.4";

    private PortcullisServer Server => fixture.Server;

    private static readonly (int Width, int Height, string Name)[] Sizes = [(1280, 900, "desktop"), (360, 780, "phone")];

    [Fact]
    public async Task EveryPageHasNoSeriousAccessibilityViolationAtAnyWidthInLightOrDark()
    {
        var axe = await AxeScriptAsync();
        var admin = await Server.AdminTokenAsync();
        var token = await Server.CreateTokenAsync(admin, new { name = "tour-deploy", description = "Deploys the dashboards from CI", expires_in_days = 3, scopes = new[] { "api", "services:echo" } });
        PortcullisServer.Secrets.Add(token);
        await Server.Client(token).GetAsync("/api/v1/me");
        var id = await TokenIdAsync(admin, "tour-deploy");
        var device = await DeviceLogin.StartAsync(Server, deviceName: "tour-laptop");
        var violations = new List<string>();

        foreach (var scheme in new[] { ColorScheme.Light, ColorScheme.Dark })
        foreach (var (width, height, size) in Sizes)
        {
            await using var context = await browser.Browser.NewContextAsync(new BrowserNewContextOptions
            {
                BaseURL = Server.BaseAddress.ToString(),
                ViewportSize = new ViewportSize { Width = width, Height = height },
                ColorScheme = scheme,
                // Only so that the axe-core script can be added; the pages' own policy is tested elsewhere (WebSessionTests).
                BypassCSP = true,
            });
            var page = await context.NewPageAsync();
            var suffix = $"{size}{(scheme == ColorScheme.Dark ? "-dark" : "")}";

            async Task VisitAsync(string name)
            {
                await page.AddScriptTagAsync(new() { Content = axe });
                var found = await page.EvaluateAsync<JsonElement>("""
                    async () => (await axe.run(document, { resultTypes: ["violations"] })).violations
                        .filter(v => v.impact === "serious" || v.impact === "critical")
                        .map(v => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map(n => n.target.join(" ")).slice(0, 3).join(", ")}`)
                    """);
                violations.AddRange(found.EnumerateArray().Select(v => $"{name} {suffix}: {v.GetString()}"));
                if (width < 400 && !await page.EvaluateAsync<bool>("document.documentElement.scrollWidth <= window.innerWidth + 1"))
                    violations.Add($"{name} {suffix}: the page is wider than the screen");
                await page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(BrowserFixture.Screenshots, $"tour-{name}-{suffix}.png"), FullPage = true });
            }

            await page.GotoAsync("/login");
            await VisitAsync("login");
            await WebUiTests.LogInAsync(page, "admin", PortcullisServer.AdminPassword);
            await page.GetByRole(AriaRole.Heading, new() { Name = "Welcome, admin" }).WaitForAsync(); // the page, not its load event (see ServiceHostTests)
            await VisitAsync("home");
            await page.GotoAsync("/tokens");
            await VisitAsync("tokens");
            await page.GotoAsync("/tokens/new");
            await VisitAsync("generate-token");
            await page.GetByLabel("Name", new() { Exact = true }).FillAsync($"tour-{suffix}");
            await page.GetByLabel("Expiration", new() { Exact = true }).SelectOptionAsync("custom");
            await page.GetByRole(AriaRole.Button, new() { Name = "Generate token" }).ClickAsync();
            await page.Locator("#expiration-error").WaitForAsync();
            await VisitAsync("generate-token-error");
            await page.GetByLabel("Expiration", new() { Exact = true }).SelectOptionAsync("30");
            await page.GetByRole(AriaRole.Button, new() { Name = "Generate token" }).ClickAsync();
            PortcullisServer.Secrets.Add(await page.GetByLabel("Your new token").InputValueAsync());
            await VisitAsync("token-revealed");
            await page.GotoAsync($"/tokens/{id}");
            await VisitAsync("token-detail");
            await page.GotoAsync($"/tokens/{id}/delete");
            await VisitAsync("delete-token");
            foreach (var (path, name) in new[] { ("/services", "services"), ("/admin/users", "admin-users"), ("/admin/services", "admin-services") })
            {
                await page.GotoAsync(path);
                await VisitAsync(name);
            }
            await page.GotoAsync("/admin/clients");
            await page.GetByLabel("Client name").FillAsync($"tour-{suffix}");
            await page.GetByRole(AriaRole.Button, new() { Name = "Create client" }).ClickAsync();
            PortcullisServer.Secrets.Add(await page.GetByLabel("Client secret", new() { Exact = true }).InputValueAsync());
            await VisitAsync("admin-clients");
            foreach (var (code, name) in new[] { ("", "device"), ("BBBB-BBBB", "device-wrong-code"), (device.GetProperty("user_code").GetString()!, "device-approve") })
            {
                await page.GotoAsync("/device?user_code=" + code);
                if (code.Length > 0)
                    await page.GetByRole(AriaRole.Button, new() { Name = "Continue" }).ClickAsync();
                await VisitAsync(name);
            }
            foreach (var (path, name) in new[] { ("/admin/tokens", "admin-tokens"), ("/admin/audit", "admin-audit"), ("/tokens/999999", "not-found"), ("/logout", "logout") })
            {
                await page.GotoAsync(path);
                await VisitAsync(name);
            }
        }

        Assert.True(violations.Count == 0, "Accessibility problems:\n" + string.Join('\n', violations));
    }

    private async Task<long> TokenIdAsync(string admin, string name)
    {
        var tokens = await Server.Client(admin).GetFromJsonAsync<JsonElement>("/api/v1/tokens");
        return tokens.EnumerateArray().First(t => t.GetProperty("name").GetString() == name).GetProperty("id").GetInt64();
    }

    /// <summary>axe-core from the npm registry, installed once into the test output (npm is a Debian package that test.sh installs).</summary>
    private static async Task<string> AxeScriptAsync()
    {
        var prefix = Path.Combine(AppContext.BaseDirectory, "axe-core");
        var script = Path.Combine(prefix, "node_modules", "axe-core", "axe.min.js");
        if (!File.Exists(script))
        {
            var (exitCode, _, error) = await ExternalTool.RunAsync("npm",
                ["install", "--no-save", "--no-package-lock", "--no-audit", "--no-fund", "--prefix", prefix, $"axe-core@{AxeVersion}"],
                "npm fetches axe-core; ./test.sh installs Debian's npm.", TimeSpan.FromMinutes(4));
            Assert.True(exitCode == 0 && File.Exists(script), $"npm could not install axe-core {AxeVersion}:\n{error}");
        }
        return await File.ReadAllTextAsync(script);
    }
}
