using System.Net;
using System.Net.Http.Json;
using System.Text.RegularExpressions;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>A browser's view over plain HTTP: cookies kept, redirects not followed.</summary>
public sealed class Browser : IDisposable
{
    private readonly HttpClient _http;

    public Browser(Uri baseAddress)
    {
        Cookies = new CookieContainer();
        // Every host name leads to loopback, as browsers resolve *.localhost (the service origins of the tests).
        _http = new HttpClient(new SocketsHttpHandler
        {
            CookieContainer = Cookies,
            AllowAutoRedirect = false,
            UseCookies = true,
            ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(IPAddress.Loopback, context.DnsEndPoint.Port, cancellationToken);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
        }) { BaseAddress = baseAddress };
        _http.DefaultRequestHeaders.Accept.ParseAdd("text/html");
    }

    /// <summary>Follows redirects (at most 10) like a browser, and returns the last answer with the URL it came from.</summary>
    public async Task<(HttpResponseMessage Response, Uri Url)> FollowAsync(string url)
    {
        var current = new Uri(_http.BaseAddress!, url);
        for (var i = 0; i < 10; i++)
        {
            var response = await _http.GetAsync(current);
            if ((int)response.StatusCode is < 300 or >= 400)
                return (response, current);
            current = new Uri(current, response.Headers.Location!);
            response.Dispose();
        }
        throw new InvalidOperationException("too many redirects");
    }

    public CookieContainer Cookies { get; }

    public Task<HttpResponseMessage> GetAsync(string path) => _http.GetAsync(path);

    public Task<HttpResponseMessage> SendAsync(HttpRequestMessage request) => _http.SendAsync(request);

    public static string CsrfToken(string html) =>
        Regex.Match(html, "name=\"csrf_token\" value=\"([^\"]+)\"").Groups[1].Value is { Length: > 0 } token ? token : throw new InvalidOperationException("no antiforgery field in:\n" + html);

    /// <summary>Opens /login, fills it in, submits it; returns the answer to the POST.</summary>
    public async Task<HttpResponseMessage> LogInAsync(string username, string password, string? returnUrl = null, Uri? postTo = null)
    {
        var form = await (await _http.GetAsync("/login" + (returnUrl is null ? "" : "?returnUrl=" + Uri.EscapeDataString(returnUrl)))).Content.ReadAsStringAsync();
        var fields = new List<KeyValuePair<string, string>>
        {
            new("csrf_token", CsrfToken(form)), new("username", username), new("password", password),
            new("returnUrl", Regex.Match(form, "name=\"returnUrl\" value=\"([^\"]*)\"").Groups[1].Value.Replace("&amp;", "&")),
        };
        using var request = new HttpRequestMessage(HttpMethod.Post, postTo is null ? new Uri("/login", UriKind.Relative) : new Uri(postTo, "/login")) { Content = new FormUrlEncodedContent(fields) };
        return await _http.SendAsync(request);
    }

    public void Dispose() => _http.Dispose();
}

/// <summary>docs/decisions.md: the web session cookie, for the API and the gateway, and its protections.</summary>
public sealed class WebSessionTests(GatewayFixture fixture) : IClassFixture<GatewayFixture>
{
    private PortcullisServer Server => fixture.Server;

    [Fact]
    public async Task LoggingInSetsAServerSideSessionCookieThatTheApiAccepts()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        using var browser = new Browser(Server.BaseAddress);
        using var login = await browser.LogInAsync(username, password);
        Assert.Equal(HttpStatusCode.SeeOther, login.StatusCode);
        Assert.Equal("/", login.Headers.Location!.OriginalString);
        var setCookie = login.Headers.GetValues("Set-Cookie").Single(c => c.StartsWith("portcullis=", StringComparison.Ordinal));
        Assert.Contains("httponly", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("samesite=lax", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("path=/", setCookie, StringComparison.OrdinalIgnoreCase);

        var me = await (await browser.GetAsync("/api/v1/me")).JsonAsync();
        Assert.Equal(username, me.GetProperty("username").GetString());
        Assert.Equal("session", me.GetProperty("auth").GetProperty("kind").GetString());
        using var home = await browser.GetAsync("/");
        Assert.Contains(username, await home.Content.ReadAsStringAsync());
        Assert.Equal("DENY", home.Headers.GetValues("X-Frame-Options").Single());
        Assert.Contains("frame-ancestors 'none'", home.Headers.GetValues("Content-Security-Policy").Single());
        Assert.DoesNotContain("unsafe-inline", home.Headers.GetValues("Content-Security-Policy").Single());
        Assert.Equal("no-referrer", home.Headers.GetValues("Referrer-Policy").Single());
    }

    [Fact]
    public async Task AWrongPasswordShowsTheSameErrorForUnknownUsersAndSetsNoSession()
    {
        var (username, _, _) = await Server.CreateUserAsync();
        using var browser = new Browser(Server.BaseAddress);
        using var wrong = await browser.LogInAsync(username, "wrong-password-x");
        using var unknown = await browser.LogInAsync("nobody-" + Guid.NewGuid().ToString("N")[..6], "wrong-password-x");
        Assert.Equal(HttpStatusCode.BadRequest, wrong.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, unknown.StatusCode);
        var error = Regex.Match(await wrong.Content.ReadAsStringAsync(), "id=\"login-error\">([^<]+)<").Groups[1].Value;
        Assert.Equal(error, Regex.Match(await unknown.Content.ReadAsStringAsync(), "id=\"login-error\">([^<]+)<").Groups[1].Value);
        Assert.Equal(HttpStatusCode.Unauthorized, (await browser.GetAsync("/api/v1/me")).StatusCode);
    }

    [Fact]
    public async Task APostWithoutTheAntiforgeryTokenIsRefusedAndGetNeverChangesState()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        using var browser = new Browser(Server.BaseAddress);
        // The login form itself: posting without its token is refused.
        using (var forged = new HttpRequestMessage(HttpMethod.Post, "/login")
               { Content = new FormUrlEncodedContent([new("username", username), new("password", password)]) })
            Assert.Equal(HttpStatusCode.BadRequest, (await browser.SendAsync(forged)).StatusCode);

        Assert.Equal(HttpStatusCode.SeeOther, (await browser.LogInAsync(username, password)).StatusCode);
        // The API with the cookie alone, as a cross-site form would send it: refused.
        using (var csrf = new HttpRequestMessage(HttpMethod.Post, "/api/v1/tokens") { Content = JsonContent.Create(new { name = "csrf" }) })
            Assert.Equal(HttpStatusCode.BadRequest, (await browser.SendAsync(csrf)).StatusCode);
        // With the token from a page of the session: allowed.
        var token = Regex.Match(await (await browser.GetAsync("/")).Content.ReadAsStringAsync(), "name=\"csrf-token\" content=\"([^\"]+)\"").Groups[1].Value;
        using (var real = new HttpRequestMessage(HttpMethod.Post, "/api/v1/tokens") { Content = JsonContent.Create(new { name = "from-the-ui" }) })
        {
            real.Headers.Add("X-CSRF-Token", token);
            using var created = await browser.SendAsync(real);
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            PortcullisServer.Secrets.Add((await created.JsonAsync()).GetProperty("token").GetString()!);
        }
        // GET /logout only shows a button; the session still works afterwards.
        Assert.Equal(HttpStatusCode.OK, (await browser.GetAsync("/logout")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await browser.GetAsync("/api/v1/me")).StatusCode);
    }

    [Fact]
    public async Task LogoutEndsTheSessionOnTheServerSoAStolenCookieFails()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        using var browser = new Browser(Server.BaseAddress);
        Assert.Equal(HttpStatusCode.SeeOther, (await browser.LogInAsync(username, password)).StatusCode);
        var stolen = browser.Cookies.GetCookies(Server.BaseAddress)["portcullis"]!.Value;

        var page = await (await browser.GetAsync("/logout")).Content.ReadAsStringAsync();
        using (var logout = new HttpRequestMessage(HttpMethod.Post, "/logout") { Content = new FormUrlEncodedContent([new("csrf_token", Browser.CsrfToken(page))]) })
        {
            using var response = await browser.SendAsync(logout);
            Assert.Equal(HttpStatusCode.SeeOther, response.StatusCode);
            Assert.Equal("/login", response.Headers.Location!.OriginalString);
        }
        using var replay = new HttpRequestMessage(HttpMethod.Get, "/api/v1/me");
        replay.Headers.Add("Cookie", "portcullis=" + stolen);
        using var client = Server.Client();
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.SendAsync(replay)).StatusCode);
    }

    [Fact]
    public async Task DisablingTheUserOrChangingThePasswordEndsTheirSessions()
    {
        var (username, password, token) = await Server.CreateUserAsync();
        using var browser = new Browser(Server.BaseAddress);
        Assert.Equal(HttpStatusCode.SeeOther, (await browser.LogInAsync(username, password)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await browser.GetAsync("/api/v1/me")).StatusCode);
        using var api = Server.Client(token);
        using var changed = await api.PostAsJsonAsync("/api/v1/me/password", new { current_password = password, new_password = password + "-new" });
        Assert.True(changed.IsSuccessStatusCode, $"password change failed: {(int)changed.StatusCode}");
        Assert.Equal(HttpStatusCode.Unauthorized, (await browser.GetAsync("/api/v1/me")).StatusCode);
    }

    [Theory]
    [InlineData("/%E3%80%82/x", "/%E3%80%82/x")]
    [InlineData("/tokens?name=caf%C3%A9", "/tokens?name=caf%C3%A9")]
    [InlineData("/%EF%BC%8Fevil.example", "/%EF%BC%8Fevil.example")]
    [InlineData("//evil.example", "/")]
    public async Task ALoggedInPersonIsRedirectedToANonAsciiReturnUrlPercentEncodedNeverA500(string returnUrl, string expected)
    {
        var (username, password, _) = await Server.CreateUserAsync();
        using var browser = new Browser(Server.BaseAddress);
        await browser.LogInAsync(username, password);
        using var response = await browser.GetAsync("/login?returnUrl=" + Uri.EscapeDataString(Uri.UnescapeDataString(returnUrl)));
        Assert.Equal(HttpStatusCode.Redirect, response.StatusCode);
        Assert.Equal(expected, response.Headers.Location!.OriginalString);
    }

    [Theory]
    [InlineData("//evil.example/x")]
    [InlineData("/\\evil.example")]
    [InlineData("/%09/evil.example")]
    [InlineData("/%5Cevil.example")]
    [InlineData("https://evil.example/")]
    [InlineData("javascript:alert(1)")]
    public async Task OnlyLocalReturnUrlsAreFollowedAfterLogin(string returnUrl)
    {
        var (username, password, _) = await Server.CreateUserAsync();
        using var browser = new Browser(Server.BaseAddress);
        using var login = await browser.LogInAsync(username, password, returnUrl);
        Assert.Equal(HttpStatusCode.SeeOther, login.StatusCode);
        Assert.Equal("/", login.Headers.Location!.OriginalString);
    }

    [Fact]
    public async Task TheWebSessionCookieIsNeverAcceptedInPathMode()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        using var browser = new Browser(Server.BaseAddress);
        await browser.LogInAsync(username, password);
        // A program's request (no Accept: text/html) with nothing but the session cookie: refused, as if anonymous.
        using var request = new HttpRequestMessage(HttpMethod.Get, "/services/echo_1/x");
        request.Headers.Accept.Clear();
        request.Headers.Accept.ParseAdd("application/json");
        using var response = await browser.SendAsync(request);
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }
}

public sealed class HttpsPublicUrlServer() : PortcullisServer(Provider.Sqlite, new() { ["PublicUrl"] = "https://auth.portcullis.test" });

/// <summary>docs/web-ui.md: under HTTPS (here: behind a trusted proxy that terminates TLS and sends X-Forwarded-Proto), cookies are Secure and __Host-.</summary>
public sealed class SecureCookieTests(HttpsPublicUrlServer server) : IClassFixture<HttpsPublicUrlServer>
{
    [Fact]
    public async Task SessionAndAntiforgeryCookiesAreSecureHostCookies()
    {
        var (username, password, _) = await server.CreateUserAsync();
        using var client = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false, UseCookies = false }) { BaseAddress = server.BaseAddress };
        // The tests connect from loopback, a trusted proxy by default.
        client.DefaultRequestHeaders.Add("X-Forwarded-Proto", "https");
        using var form = await client.GetAsync("/login");
        Assert.Equal(HttpStatusCode.OK, form.StatusCode);
        var antiforgery = form.Headers.GetValues("Set-Cookie").Single(c => c.StartsWith("__Host-portcullis-antiforgery=", StringComparison.Ordinal));
        Assert.Contains("secure", antiforgery, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("path=/", antiforgery, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("domain=", antiforgery, StringComparison.OrdinalIgnoreCase);

        // HttpClient keeps Secure cookies away from http://, so the login is posted by hand.
        var html = await form.Content.ReadAsStringAsync();
        using var login = new HttpRequestMessage(HttpMethod.Post, "/login")
        {
            Content = new FormUrlEncodedContent([new("csrf_token", Browser.CsrfToken(html)), new("username", username), new("password", password), new("returnUrl", "")]),
        };
        login.Headers.Add("Cookie", antiforgery.Split(';')[0]);
        using var response = await client.SendAsync(login);
        Assert.Equal(HttpStatusCode.SeeOther, response.StatusCode);
        var session = response.Headers.GetValues("Set-Cookie").Single(c => c.StartsWith("__Host-portcullis=", StringComparison.Ordinal));
        Assert.Contains("secure", session, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("httponly", session, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("samesite=lax", session, StringComparison.OrdinalIgnoreCase);
        // And that cookie is the credential.
        using var me = new HttpRequestMessage(HttpMethod.Get, "/api/v1/me");
        me.Headers.Add("Cookie", session.Split(';')[0]);
        Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(me)).StatusCode);

        // Without X-Forwarded-Proto the request is plain HTTP: pages are served over HTTPS only, so it is redirected there.
        using var plain = new HttpClient(new HttpClientHandler { UseCookies = false, AllowAutoRedirect = false }) { BaseAddress = server.BaseAddress };
        using var plainForm = await plain.GetAsync("/login?returnUrl=%2Ftokens");
        Assert.Equal(HttpStatusCode.PermanentRedirect, plainForm.StatusCode);
        Assert.Equal("https://auth.portcullis.test/login?returnUrl=%2Ftokens", plainForm.Headers.Location!.OriginalString);
        Assert.False(plainForm.Headers.Contains("Set-Cookie"));
    }
}
