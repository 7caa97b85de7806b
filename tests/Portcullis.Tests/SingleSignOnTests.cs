using System.Net;
using System.Net.Http.Json;
using Microsoft.Playwright;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>A Portcullis whose web UI people log in to through a real OpenID Provider (oidc-provider) on loopback.</summary>
public sealed class SingleSignOnFixture : IAsyncLifetime
{
    public const string Name = "test-idp";
    public const string DisplayName = "Test IdP";
    public const string AdminGroup = "portcullis-admins";

    public OpenIdProvider Idp { get; } = new();
    public PortcullisServer Server { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        // Neither the server's output nor the provider's may ever show Portcullis's client secret.
        PortcullisServer.Secrets.Add(OpenIdProvider.ClientSecret);
        Server = PortcullisServer.With(Provider.Sqlite, new Dictionary<string, string>
        {
            ["Auth:Oidc:Providers:0:Name"] = Name,
            ["Auth:Oidc:Providers:0:DisplayName"] = DisplayName,
            ["Auth:Oidc:Providers:0:Authority"] = Idp.Url,
            ["Auth:Oidc:Providers:0:ClientId"] = OpenIdProvider.ClientId,
            ["Auth:Oidc:Providers:0:ClientSecret"] = OpenIdProvider.ClientSecret,
            ["Auth:Oidc:Providers:0:Scopes"] = "openid profile groups",
            ["Auth:Oidc:Providers:0:Admin:groups"] = AdminGroup,
        });
        await Server.InitializeAsync();
        await Idp.StartAsync(Name, Server.BaseAddress);
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        await Idp.DisposeAsync();
    }
}

public sealed class SingleSignOnTests(SingleSignOnFixture fixture, BrowserFixture browser) : IClassFixture<SingleSignOnFixture>, IClassFixture<BrowserFixture>
{
    private PortcullisServer Server => fixture.Server;

    private async Task<IPage> NewPageAsync(PortcullisServer? server = null) =>
        await (await browser.Browser.NewContextAsync(new BrowserNewContextOptions { BaseURL = (server ?? Server).BaseAddress.ToString() })).NewPageAsync();

    /// <summary>From Portcullis's login page through the provider's pages (its login form and consent, when it shows them) and back.</summary>
    private async Task LogInThroughProviderAsync(IPage page, string login)
    {
        await page.GotoAsync("/login");
        await page.GetByRole(AriaRole.Link, new() { Name = $"Log in with {SingleSignOnFixture.DisplayName}" }).ClickAsync();
        await FinishAtProviderAsync(page, login);
    }

    /// <param name="done">Stops early (a test that intercepts the way back knows better than the page's address).</param>
    /// <remarks>
    /// Each step waits for what it needs, never for the page's load event: after a form posts, the provider redirects twice,
    /// and on a busy machine Chromium has been seen to reach its next page without Playwright ever reporting that page's load.
    /// </remarks>
    private async Task FinishAtProviderAsync(IPage page, string login, Func<bool>? done = null)
    {
        var loginForm = page.Locator("input[name=login]");
        var consent = page.GetByRole(AriaRole.Button, new() { Name = "Continue" });
        for (var step = 0; step < 10; step++)
        {
            if (!await AtProviderFormAsync())
                return;
            var before = page.Url;
            if (await loginForm.CountAsync() > 0)
            {
                await loginForm.FillAsync(login);
                await page.Locator("input[name=password]").FillAsync("any password");
                await page.GetByRole(AriaRole.Button, new() { Name = "Sign-in" }).ClickAsync();
            }
            else
            {
                await consent.ClickAsync();
            }
            // Every form posts to an address of its own, so the address changes once the answer arrives (unless the test
            // stops the way back, and knows it).
            for (var waited = 0; page.Url == before && done?.Invoke() is not true; waited++)
            {
                Assert.True(waited < 300, $"no answer to the provider's form at {before}");
                await Task.Delay(100);
            }
        }
        Assert.Fail($"still at the provider after 10 forms: {page.Url}");

        // Whether the page is one of the provider's forms (false once the browser has left the provider, or the test is done).
        async Task<bool> AtProviderFormAsync()
        {
            for (var waited = 0; page.Url.StartsWith(fixture.Idp.Url, StringComparison.Ordinal) && done?.Invoke() is not true; waited++)
            {
                try
                {
                    if (await loginForm.Or(consent).CountAsync() > 0)
                        return true;
                }
                catch (PlaywrightException)
                {
                    // The page changed while it was read; look again.
                }
                Assert.True(waited < 300, $"the provider's page shows no form: {page.Url}");
                await Task.Delay(100);
            }
            return false;
        }
    }

    private async Task<Portcullis.Client.UserResponse> UserAsync(string name, PortcullisServer? server = null)
    {
        server ??= Server;
        using var admin = server.Client(await server.AdminTokenAsync());
        return (await admin.GetFromJsonAsync<Portcullis.Client.UserResponse>($"/api/v1/users/{name}", Portcullis.Client.PortcullisClient.Json))!;
    }

    [Fact]
    public async Task APersonIsProvisionedAtTheirFirstLoginAndTheAdminRuleIsAppliedAtEveryLogin()
    {
        var person = "alice-" + Guid.NewGuid().ToString("N")[..6];
        fixture.Idp.SetAccounts(new() { [person] = [SingleSignOnFixture.AdminGroup, "staff"] });
        var page = await NewPageAsync();
        await LogInThroughProviderAsync(page, person);
        Assert.Equal(Server.BaseAddress.ToString(), page.Url);
        Assert.Contains($"{person} · admin", await page.Locator(".who").InnerTextAsync());
        var user = await UserAsync(person);
        Assert.True(user.Admin);
        Assert.Equal($"oidc:{SingleSignOnFixture.Name}", user.Source);

        await page.GotoAsync("/admin/users");
        Assert.Contains(SingleSignOnFixture.Name, await page.Locator("tr", new() { HasText = person }).InnerTextAsync());
        await page.GotoAsync("/");

        // A person from the provider has no Portcullis password.
        using (var password = await Server.PostFormAsync("/auth/token", [new("grant_type", "password"), new("username", person), new("password", "any password")]))
            Assert.Equal(HttpStatusCode.BadRequest, password.StatusCode);

        // The web session is the usual one: the token pages work with it.
        await page.GetByRole(AriaRole.Link, new() { Name = "Tokens", Exact = true }).ClickAsync();
        Assert.EndsWith("/tokens", page.Url);

        // Out of the group at the provider: no longer an admin at the next login, and the session from before loses admin rights at once.
        fixture.Idp.SetAccounts(new() { [person] = ["staff"] });
        var second = await NewPageAsync();
        await LogInThroughProviderAsync(second, person);
        Assert.DoesNotContain("admin", await second.Locator(".who").InnerTextAsync());
        Assert.False((await UserAsync(person)).Admin);
        await page.GotoAsync("/admin/users");
        Assert.Contains("Only administrators", await page.ContentAsync());

        // And back in.
        fixture.Idp.SetAccounts(new() { [person] = [SingleSignOnFixture.AdminGroup] });
        var third = await NewPageAsync();
        await LogInThroughProviderAsync(third, person);
        Assert.True((await UserAsync(person)).Admin);

        // Logging out ends the Portcullis session and offers the provider's logout.
        await third.GotoAsync("/logout");
        await third.GetByRole(AriaRole.Button, new() { Name = "Log out" }).ClickAsync();
        var providerLogout = third.GetByRole(AriaRole.Link, new() { Name = $"Log out of {SingleSignOnFixture.DisplayName}" });
        Assert.StartsWith(fixture.Idp.Url, await providerLogout.GetAttributeAsync("href"));
        await third.GotoAsync("/tokens");
        Assert.Contains("/login", third.Url);
    }

    [Fact]
    public async Task ADeviceLoginIsApprovedByAPersonWhoLogsInThroughTheProvider()
    {
        var person = "gina-" + Guid.NewGuid().ToString("N")[..6];
        fixture.Idp.SetAccounts(new() { [person] = [] });
        var start = await DeviceLogin.StartAsync(Server, deviceName: "laptop");
        var page = await NewPageAsync();
        // The code's link asks for a login first; the provider's login comes back to the code's form.
        await page.GotoAsync(start.GetProperty("verification_uri_complete").GetString()!);
        await page.GetByRole(AriaRole.Link, new() { Name = $"Log in with {SingleSignOnFixture.DisplayName}" }).ClickAsync();
        await FinishAtProviderAsync(page, person);
        Assert.Equal(start.GetProperty("user_code").GetString(), await page.GetByLabel("Code").InputValueAsync());
        await page.GetByRole(AriaRole.Button, new() { Name = "Continue" }).ClickAsync();
        await page.GetByRole(AriaRole.Button, new() { Name = "Approve" }).ClickAsync();
        await page.GetByRole(AriaRole.Heading, new() { Name = "Device approved" }).WaitForAsync();
        var (status, body) = await DeviceLogin.PollUntilDecidedAsync(Server, start.GetProperty("device_code").GetString()!);
        Assert.Equal(HttpStatusCode.OK, status);
        var token = body.GetProperty("access_token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        using var asDevice = Server.Client(token);
        Assert.Equal(person, (await (await asDevice.GetAsync("/api/v1/me")).JsonAsync()).GetProperty("username").GetString());
    }

    [Fact]
    public async Task AWrongStateOrAReplayedCodeLogsNobodyIn()
    {
        var person = "bob-" + Guid.NewGuid().ToString("N")[..6];
        fixture.Idp.SetAccounts(new() { [person] = [] });
        var page = await NewPageAsync();
        string? callback = null;
        // Stop the browser on its way back from the provider, keeping the callback it was sent to. (A route sees only the first
        // request of a redirect chain, so the provider's answers are fetched here and the redirect to Portcullis is kept.)
        await page.RouteAsync(fixture.Idp.Url + "/**", async route =>
        {
            var response = await route.FetchAsync(new() { MaxRedirects = 0 });
            // A login or consent form posts, then the provider resumes the authorization, which sends the browser back.
            if (response.Headers.GetValueOrDefault("location") is { } resume && resume.StartsWith(fixture.Idp.Url + "/auth/", StringComparison.Ordinal))
                response = await page.Context.APIRequest.GetAsync(resume, new() { MaxRedirects = 0 });
            if (response.Headers.GetValueOrDefault("location") is { } location && location.Contains($"/login/oidc/{SingleSignOnFixture.Name}/callback"))
            {
                callback = location;
                await route.FulfillAsync(new() { Status = 200, ContentType = "text/plain", Body = "stopped on the way back" });
                return;
            }
            await route.FulfillAsync(new() { Response = response });
        });
        await page.GotoAsync("/login");
        await page.GetByRole(AriaRole.Link, new() { Name = $"Log in with {SingleSignOnFixture.DisplayName}" }).ClickAsync();
        await FinishAtProviderAsync(page, person, () => callback is not null);
        for (var i = 0; i < 50 && callback is null; i++)
            await Task.Delay(100);
        Assert.NotNull(callback);
        await page.UnrouteAllAsync();

        var tampered = System.Text.RegularExpressions.Regex.Replace(callback!, "state=[^&]+", "state=forged-state");
        await page.GotoAsync(tampered);
        Assert.Contains("did not complete", await page.Locator("#login-error").InnerTextAsync());

        // The real callback still works once (the correlation cookie survived the forged attempt)...
        await page.GotoAsync(callback!);
        Assert.Contains(person, await page.Locator(".who").InnerTextAsync());
        await page.GotoAsync("/logout");
        await page.GetByRole(AriaRole.Button, new() { Name = "Log out" }).ClickAsync();

        // ...and never again, in this browser or another.
        await page.GotoAsync(callback!);
        Assert.Contains("did not complete", await page.Locator("#login-error").InnerTextAsync());
        var other = await NewPageAsync();
        await other.GotoAsync(callback!);
        Assert.Contains("did not complete", await other.Locator("#login-error").InnerTextAsync());
        Assert.DoesNotContain(person, await other.ContentAsync());
    }

    [Fact]
    public async Task AnAccountOfTheSameNameIsNeverTakenOverAndADisabledPersonCannotLogIn()
    {
        var (taken, _, _) = await Server.CreateUserAsync();
        fixture.Idp.SetAccounts(new() { [taken] = [SingleSignOnFixture.AdminGroup] });
        var page = await NewPageAsync();
        await LogInThroughProviderAsync(page, taken);
        Assert.Contains("exists already", await page.Locator("#login-error").InnerTextAsync());
        Assert.Equal("local", (await UserAsync(taken)).Source);
        Assert.False((await UserAsync(taken)).Admin);

        var person = "carol-" + Guid.NewGuid().ToString("N")[..6];
        fixture.Idp.SetAccounts(new() { [person] = [] });
        var first = await NewPageAsync();
        await LogInThroughProviderAsync(first, person);
        using var admin = Server.Client(await Server.AdminTokenAsync());
        Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{person}", new { disabled = true })).StatusCode);
        var again = await NewPageAsync();
        await LogInThroughProviderAsync(again, person);
        Assert.Contains("disabled", await again.Locator("#login-error").InnerTextAsync());
    }

    [Fact]
    public async Task WithoutLocalLoginOrAutoProvisionOnlyThePeopleAnAdminMadeLogInThroughTheProvider()
    {
        var settings = new Dictionary<string, string>
        {
            ["Auth:LocalLogin"] = "false",
            ["Auth:Oidc:Providers:0:AutoProvision"] = "false",
            ["Auth:Oidc:Providers:0:Name"] = SingleSignOnFixture.Name,
            ["Auth:Oidc:Providers:0:DisplayName"] = SingleSignOnFixture.DisplayName,
            ["Auth:Oidc:Providers:0:Authority"] = fixture.Idp.Url,
            ["Auth:Oidc:Providers:0:ClientId"] = OpenIdProvider.ClientId,
            ["Auth:Oidc:Providers:0:ClientSecret"] = OpenIdProvider.ClientSecret,
        };
        await using (var server = PortcullisServer.With(Provider.Sqlite, settings))
        {
            await server.InitializeAsync();
            using var client = server.Client();
            var page = await client.GetStringAsync("/login");
            Assert.Contains($"Log in with {SingleSignOnFixture.DisplayName}", page);
            Assert.DoesNotContain("name=\"password\"", page);
            using var posted = await client.PostAsync("/login", new FormUrlEncodedContent([new("username", "admin"), new("password", PortcullisServer.AdminPassword)]));
            Assert.Equal(HttpStatusCode.Forbidden, posted.StatusCode);

            // The account an administrator made is linked at its first login through the provider; nobody else gets in.
            await fixture.Idp.StartAsync(SingleSignOnFixture.Name, Server.BaseAddress, server.BaseAddress);
            var (made, _, _) = await server.CreateUserAsync();
            var stranger = "frank-" + Guid.NewGuid().ToString("N")[..6];
            fixture.Idp.SetAccounts(new() { [made] = [], [stranger] = [] });
            var linked = await NewPageAsync(server);
            await LogInThroughProviderAsync(linked, made);
            Assert.Contains(made, await linked.Locator(".who").InnerTextAsync());
            Assert.Equal($"oidc:{SingleSignOnFixture.Name}", (await UserAsync(made, server)).Source);
            var refused = await NewPageAsync(server);
            await LogInThroughProviderAsync(refused, stranger);
            Assert.Contains("no account for you yet", await refused.Locator("#login-error").InnerTextAsync());
            using var admin = server.Client(await server.AdminTokenAsync());
            Assert.Equal(HttpStatusCode.NotFound, (await admin.GetAsync($"/api/v1/users/{stranger}")).StatusCode);
        }

        var (exitCode, error) = await PortcullisServer.RefusedStartAsync("--Auth:LocalLogin=false");
        Assert.NotEqual(0, exitCode);
        Assert.Contains("nobody could log in to the web UI", error);
        (exitCode, error) = await PortcullisServer.RefusedStartAsync("--Auth:Oidc:Providers:0:Authority=http://sso.example.com");
        Assert.NotEqual(0, exitCode);
        Assert.Contains("Auth:Oidc:Providers:0:ClientId is missing", error);
        Assert.Contains("use https", error);
    }

    [Fact]
    public async Task AfterTheProviderRotatesItsSigningKeyLoginsWorkAgain()
    {
        var person = "dave-" + Guid.NewGuid().ToString("N")[..6];
        fixture.Idp.SetAccounts(new() { [person] = [] });
        var before = await NewPageAsync();
        await LogInThroughProviderAsync(before, person);
        Assert.Contains(person, await before.Locator(".who").InnerTextAsync());

        // The provider retires its key: Portcullis holds the old one, sees a token signed with one it does not know, fetches
        // the provider's keys again and accepts the new one (at worst after one refused attempt that says to try again).
        fixture.Idp.RotateKey();
        await fixture.Idp.StartAsync(SingleSignOnFixture.Name, Server.BaseAddress);
        var after = await NewPageAsync();
        await LogInThroughProviderAsync(after, person);
        await after.Locator(".who").Or(after.Locator("#login-error")).WaitForAsync();
        if (await after.Locator("#login-error").CountAsync() > 0)
        {
            Assert.Contains("Try again", await after.Locator("#login-error").InnerTextAsync());
            await LogInThroughProviderAsync(after, person);
        }
        Assert.Contains(person, await after.Locator(".who").InnerTextAsync());
    }
}
