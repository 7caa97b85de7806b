using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.Playwright;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// A proxy with one of the shipped service-host examples in front of an application on a host of its own
/// (app.localhost, on the proxy's port), Portcullis beside it, and the application.
/// </summary>
public abstract class ServiceHostFixture : IAsyncLifetime
{
    public TestUpstream App { get; private set; } = null!;
    public PortcullisServer Server { get; private set; } = null!;
    public int Port { get; } = PortcullisServer.FreePort();
    private ProxyProcess _proxy = null!;

    public string AppOrigin => $"http://app.localhost:{Port}";

    protected abstract Task<ProxyProcess> StartProxyAsync(int portcullis, int app, int port);

    protected static Task<string> ExampleAsync(string name) => File.ReadAllTextAsync(Path.Combine(ClusterTests.RepositoryRoot(), "docs", "examples", name));

    public async Task InitializeAsync()
    {
        App = await TestUpstream.StartAsync();
        Server = PortcullisServer.With(Provider.Sqlite, new() { ["Gateway:ServiceHost"] = "{service}.localhost:" + Port });
        await Server.InitializeAsync();
        _proxy = await StartProxyAsync(Server.BaseAddress.Port, App.BaseAddress.Port, Port);
    }

    public async Task DisposeAsync()
    {
        await _proxy.DisposeAsync();
        await Server.DisposeAsync();
        await App.DisposeAsync();
    }
}

public sealed class NginxServiceHostFixture : ServiceHostFixture
{
    protected override async Task<ProxyProcess> StartProxyAsync(int portcullis, int app, int port) =>
        await NginxProcess.StartAsync((await ExampleAsync("nginx-service-host.conf"))
            .Replace("server 127.0.0.1:8080;", $"server 127.0.0.1:{portcullis};")
            .Replace("server 127.0.0.1:5000;", $"server 127.0.0.1:{app};")
            .Replace("listen 127.0.0.1:8000;", $"listen 127.0.0.1:{port};")
            .Replace("server_name *.svc.example.com;", "server_name *.localhost;"), port);
}

public sealed class CaddyServiceHostFixture : ServiceHostFixture
{
    protected override async Task<ProxyProcess> StartProxyAsync(int portcullis, int app, int port) =>
        await CaddyProcess.StartAsync((await ExampleAsync("Caddyfile-service-host"))
            .Replace("127.0.0.1:8080", $"127.0.0.1:{portcullis}")
            .Replace("127.0.0.1:5000", $"127.0.0.1:{app}")
            .Replace("http://*.svc.example.com:8000", $"http://*.localhost:{port}"), port);
}

/// <summary>docs/examples/nginx-service-host.conf with the real nginx.</summary>
public sealed class NginxServiceHostTests(NginxServiceHostFixture fixture, BrowserFixture browser)
    : ServiceHostTests(fixture, browser), IClassFixture<NginxServiceHostFixture>, IClassFixture<BrowserFixture>;

/// <summary>docs/examples/Caddyfile-service-host with the real Caddy.</summary>
public sealed class CaddyServiceHostTests(CaddyServiceHostFixture fixture, BrowserFixture browser)
    : ServiceHostTests(fixture, browser), IClassFixture<CaddyServiceHostFixture>, IClassFixture<BrowserFixture>;

/// <summary>
/// An application on a host of its own behind forward-auth, for a program with a token and for a person in
/// Chromium, who logs in through the same handshake as Portcullis's own service origins.
/// </summary>
public abstract class ServiceHostTests(ServiceHostFixture fixture, BrowserFixture browser)
{
    private PortcullisServer Server => fixture.Server;

    [Fact]
    public async Task AProgramWithATokenIsLetThroughAndNeverSentToALoginPage()
    {
        var (username, _, token) = await Server.CreateUserAsync();
        using var client = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false });
        using var request = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{fixture.Port}/page");
        request.Headers.Host = $"app.localhost:{fixture.Port}";
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        request.Headers.Add("Cookie", "theirs=kept; portcullis-service=secret-looking");
        var echo = await TestUpstream.EchoAsync(await client.SendAsync(request));
        Assert.Equal(username, echo.GetProperty("headers").GetProperty("x-portcullis-user").GetString());
        Assert.Equal("theirs=kept", echo.GetProperty("headers").GetProperty("cookie").GetString());

        using var anonymous = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{fixture.Port}/page");
        anonymous.Headers.Host = $"app.localhost:{fixture.Port}";
        using var refused = await client.SendAsync(anonymous);
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        Assert.Contains("Bearer realm=\"portcullis\"", refused.Headers.WwwAuthenticate.ToString());
    }

    [Fact]
    public async Task ATokenLimitedToAnAddressPassesOnlyFromItWhateverTheClientClaims()
    {
        var (_, _, person) = await Server.CreateUserAsync();
        var fromThree = await Server.CreateTokenAsync(person, new { name = "three-" + Guid.NewGuid().ToString("N")[..6], allowed_cidrs = new[] { "127.0.0.3/32" } });
        var front = new Uri($"http://127.0.0.1:{fixture.Port}");
        using var three = LoopbackSource.Client("127.0.0.3", front);
        using var one = LoopbackSource.Client("127.0.0.1", front);

        async Task<HttpStatusCode> SendAsync(HttpClient client, string? claimed = null)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/page");
            request.Headers.Host = $"app.localhost:{fixture.Port}";
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", fromThree);
            if (claimed is not null)
                request.Headers.TryAddWithoutValidation("X-Forwarded-For", claimed);
            using var response = await client.SendAsync(request);
            return response.StatusCode;
        }

        Assert.Equal(HttpStatusCode.OK, await SendAsync(three));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(one));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(one, claimed: "127.0.0.3"));
    }

    [Fact]
    public async Task APersonLogsInThroughTheProxyInChromiumAndTheApplicationSeesThemButNotTheirCookie()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        await using var context = await browser.Browser.NewContextAsync();
        var page = await context.NewPageAsync();
        await page.GotoAsync(fixture.AppOrigin + "/dashboard?tab=2");
        Assert.StartsWith(Server.BaseAddress + "login?returnUrl=", page.Url);
        await WebUiTests.LogInAsync(page, username, password);
        var echo = await WebUiTests.EchoedRequestAtAsync(page, fixture.AppOrigin + "/dashboard?tab=2");
        Assert.Equal(username, echo.GetProperty("headers").GetProperty("x-portcullis-user").GetString());
        var cookie = echo.GetProperty("headers").TryGetProperty("cookie", out var c) ? c.GetString() : "";
        Assert.True(string.IsNullOrEmpty(cookie), $"the application received cookies: {cookie}");
        Assert.Contains(await context.CookiesAsync([fixture.AppOrigin]), c => c.Name == "portcullis-service" && c.HttpOnly);

        // Logging out of Portcullis ends it here too.
        await page.GotoAsync(Server.BaseAddress.ToString());
        await page.GetByRole(AriaRole.Button, new() { Name = "Log out" }).ClickAsync();
        // The login form itself, not the page's load event: a loaded CI machine once waited 30 s on that event after the
        // redirect to /login had already been followed.
        await page.GetByRole(AriaRole.Button, new() { Name = "Log in" }).WaitForAsync();
        Assert.EndsWith("/login", page.Url);
        await page.GotoAsync(fixture.AppOrigin + "/dashboard");
        Assert.StartsWith(Server.BaseAddress + "login?returnUrl=", page.Url);
    }
}
