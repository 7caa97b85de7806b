using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.RegularExpressions;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// docs/gateway.md, "Service origins": a person reaches a service on its own origin (here echo.localhost on the
/// server's port) through the handshake with the UI origin, and what ends the web session ends that access.
/// </summary>
public sealed class ServiceOriginTests(GatewayFixture fixture) : IClassFixture<GatewayFixture>
{
    private PortcullisServer Server => fixture.Server;

    private string Origin(string label) => $"http://{label}.localhost:{Server.BaseAddress.Port}";

    /// <summary>A new user, logged in to the UI and, through the handshake, to echo's origin.</summary>
    private async Task<(string Username, Browser Browser)> OnTheServiceOriginAsync()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        var browser = new Browser(Server.BaseAddress);
        await browser.LogInAsync(username, password);
        Assert.Equal(HttpStatusCode.OK, (await browser.FollowAsync(Origin("echo") + "/x")).Response.StatusCode);
        return (username, browser);
    }

    private async Task AssertSentToTheHandshakeAsync(Browser browser)
    {
        using var refused = await browser.GetAsync(Origin("echo") + "/x");
        Assert.Equal(HttpStatusCode.Found, refused.StatusCode);
        Assert.EndsWith("/auth/handshake", refused.Headers.Location!.GetLeftPart(UriPartial.Path));
    }

    [Fact]
    public async Task APersonLogsInThroughTheHandshakeAndTheServiceSeesThemWithoutPortcullisCookies()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        using var browser = new Browser(Server.BaseAddress);

        // Not logged in: the service origin → the UI's handshake → the login page.
        using var first = await browser.GetAsync(Origin("echo--1") + "/dashboard?tab=2");
        Assert.Equal(HttpStatusCode.Found, first.StatusCode);
        var handshake = first.Headers.Location!;
        Assert.Equal(Server.BaseAddress.Authority, handshake.Authority);
        Assert.Equal("/auth/handshake", handshake.AbsolutePath);
        var state = Assert.Single(first.Headers.GetValues("Set-Cookie"), c => c.StartsWith("portcullis-state=", StringComparison.Ordinal));
        Assert.Contains("httponly", state, StringComparison.OrdinalIgnoreCase);
        using var toLogin = await browser.GetAsync(handshake.PathAndQuery);
        Assert.Equal(HttpStatusCode.Found, toLogin.StatusCode);
        var returnUrl = Uri.UnescapeDataString(toLogin.Headers.Location!.OriginalString["/login?returnUrl=".Length..]);
        Assert.StartsWith("/auth/handshake?", returnUrl);

        // Logging in leads back to the handshake, which sends a code to the service origin, which sets its own cookie.
        using var login = await browser.LogInAsync(username, password, returnUrl);
        Assert.Equal(HttpStatusCode.SeeOther, login.StatusCode);
        using var withCode = await browser.GetAsync(login.Headers.Location!.OriginalString);
        Assert.Equal(HttpStatusCode.Found, withCode.StatusCode);
        var callback = withCode.Headers.Location!;
        Assert.Equal(Origin("echo--1") + "/.portcullis/callback", callback.GetLeftPart(UriPartial.Path));
        using var landed = await browser.GetAsync(callback.ToString());
        Assert.Equal(HttpStatusCode.Found, landed.StatusCode);
        Assert.Equal("/dashboard?tab=2", landed.Headers.Location!.OriginalString);
        var serviceCookie = Assert.Single(landed.Headers.GetValues("Set-Cookie"), c => c.StartsWith("portcullis-service=", StringComparison.Ordinal));
        Assert.Contains("httponly", serviceCookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("samesite=lax", serviceCookie, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("domain=", serviceCookie, StringComparison.OrdinalIgnoreCase);

        using var request = new HttpRequestMessage(HttpMethod.Get, Origin("echo--1") + "/dashboard?tab=2");
        request.Headers.Add("Cookie", "theirs=kept");
        var echo = await TestUpstream.EchoAsync(await browser.SendAsync(request));
        Assert.Equal("/echo/dashboard", echo.GetProperty("path").GetString());
        var headers = echo.GetProperty("headers");
        Assert.Equal(username, headers.GetProperty("x-portcullis-user").GetString());
        Assert.Equal("theirs=kept", headers.GetProperty("cookie").GetString());

        // The code was for one use only.
        using var replay = await browser.GetAsync(callback.ToString());
        Assert.Equal(HttpStatusCode.BadRequest, replay.StatusCode);
    }

    [Fact]
    public async Task ALoggedInPersonGoesStraightBackAndLogoutEndsTheServiceOriginAtOnce()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        using var browser = new Browser(Server.BaseAddress);
        await browser.LogInAsync(username, password);
        var (page, url) = await browser.FollowAsync(Origin("echo") + "/x");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal(Origin("echo") + "/x", url.ToString());
        Assert.Equal(username, (await TestUpstream.EchoAsync(page)).GetProperty("headers").GetProperty("x-portcullis-user").GetString());

        // Log out in the UI: the service origin's session ends with it, without waiting for any cache.
        var home = await (await browser.GetAsync("/")).Content.ReadAsStringAsync();
        using var logout = await browser.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/logout")
        {
            Content = new FormUrlEncodedContent([new("csrf_token", Browser.CsrfToken(home))]),
        });
        Assert.Equal(HttpStatusCode.SeeOther, logout.StatusCode);
        await AssertSentToTheHandshakeAsync(browser);
    }

    [Fact]
    public async Task DisablingThePersonEndsTheServiceOriginSession()
    {
        var (username, browser) = await OnTheServiceOriginAsync();
        using var owned = browser;
        using var admin = Server.Client(await Server.AdminTokenAsync());
        Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { disabled = true })).StatusCode);
        await AssertSentToTheHandshakeAsync(browser);
    }

    [Fact]
    public async Task AServiceOriginCookieOpensThatServiceOnlyAndIsNeverTheUiSession()
    {
        var (_, browser) = await OnTheServiceOriginAsync();
        using var owned = browser;
        var cookie = browser.Cookies.GetCookies(new Uri(Origin("echo")))["portcullis-service"]!.Value;

        using var raw = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false, UseCookies = false });
        foreach (var (url, host) in new[]
        {
            (Server.BaseAddress + "x", $"secret.localhost:{Server.BaseAddress.Port}"),
            (Server.BaseAddress + "api/v1/me", Server.BaseAddress.Authority),
            (Server.BaseAddress + "services/echo_1/x", Server.BaseAddress.Authority),
        })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, url);
            request.Headers.Host = host;
            request.Headers.Add("Cookie", $"portcullis-service={cookie}; portcullis={cookie}");
            using var response = await raw.SendAsync(request);
            Assert.True(response.StatusCode == HttpStatusCode.Unauthorized, $"{host}{new Uri(url).AbsolutePath}: {(int)response.StatusCode}");
        }
    }

    [Fact]
    public async Task ACodeIsBoundToTheBrowserThatAskedAndToTheService()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        using var browser = new Browser(Server.BaseAddress);
        await browser.LogInAsync(username, password);
        using var start = await browser.GetAsync(Origin("echo") + "/x");
        var handshake = start.Headers.Location!;
        // Someone else's browser (no state cookie) cannot redeem a code issued for this one.
        using var withCode = await browser.GetAsync(handshake.PathAndQuery);
        var callback = withCode.Headers.Location!;
        using var stranger = new Browser(Server.BaseAddress);
        using var stolen = await stranger.GetAsync(callback.ToString());
        Assert.Equal(HttpStatusCode.BadRequest, stolen.StatusCode);
        // A browser with a state of its own burns the code trying; without one it cannot even try.
        using var other = new Browser(Server.BaseAddress);
        using var otherStart = await other.GetAsync(Origin("echo") + "/y");
        Assert.Equal(HttpStatusCode.Found, otherStart.StatusCode);
        using var mismatched = await other.GetAsync(callback.ToString());
        Assert.Equal(HttpStatusCode.BadRequest, mismatched.StatusCode);
        using var late = await browser.GetAsync(callback.ToString());
        Assert.Equal(HttpStatusCode.BadRequest, late.StatusCode);

        // A code for one service is no good on another's origin.
        using var again = await browser.GetAsync(Origin("echo") + "/x");
        using var code = await browser.GetAsync(again.Headers.Location!.PathAndQuery);
        var elsewhere = code.Headers.Location!.ToString().Replace("echo.localhost", "open.localhost", StringComparison.Ordinal);
        using var wrongService = await browser.GetAsync(elsewhere);
        Assert.Equal(HttpStatusCode.BadRequest, wrongService.StatusCode);

        // A malformed handshake is refused, not interpreted.
        using var bad = await browser.GetAsync("/auth/handshake?service=echo&state=short");
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
    }
}
