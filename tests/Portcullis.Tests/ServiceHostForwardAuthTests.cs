using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.Playwright;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// The real nginx with docs/examples/nginx-service-host.conf: an application on a host of its own
/// (app.localhost, on nginx's port) behind forward-auth, for a program with a token and for a person in
/// Chromium, who logs in through the same handshake as Portcullis's own service origins.
/// </summary>
public sealed class NginxServiceHostFixture : IAsyncLifetime
{
    public TestUpstream App { get; private set; } = null!;
    public PortcullisServer Server { get; private set; } = null!;
    public int Port { get; } = PortcullisServer.FreePort();
    private NginxProcess _nginx = null!;

    public string AppOrigin => $"http://app.localhost:{Port}";

    public async Task InitializeAsync()
    {
        App = await TestUpstream.StartAsync();
        Server = PortcullisServer.With(Provider.Sqlite, new() { ["Gateway:ServiceHost"] = "{service}.localhost:" + Port });
        await Server.InitializeAsync();
        var config = (await File.ReadAllTextAsync(Path.Combine(ClusterTests.RepositoryRoot(), "docs", "examples", "nginx-service-host.conf")))
            .Replace("server 127.0.0.1:8080;", $"server 127.0.0.1:{Server.BaseAddress.Port};")
            .Replace("server 127.0.0.1:5000;", $"server 127.0.0.1:{App.BaseAddress.Port};")
            .Replace("listen 127.0.0.1:8000;", $"listen 127.0.0.1:{Port};")
            .Replace("server_name *.svc.example.com;", "server_name *.localhost;");
        _nginx = await NginxProcess.StartAsync(config, Port);
    }

    public async Task DisposeAsync()
    {
        await _nginx.DisposeAsync();
        await Server.DisposeAsync();
        await App.DisposeAsync();
    }
}

public sealed class NginxServiceHostTests(NginxServiceHostFixture fixture, BrowserFixture browser)
    : IClassFixture<NginxServiceHostFixture>, IClassFixture<BrowserFixture>
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
    public async Task APersonLogsInThroughNginxInChromiumAndTheApplicationSeesThemButNotTheirCookie()
    {
        var (username, password, _) = await Server.CreateUserAsync();
        await using var context = await browser.Browser.NewContextAsync();
        var page = await context.NewPageAsync();
        await page.GotoAsync(fixture.AppOrigin + "/dashboard?tab=2");
        Assert.StartsWith(Server.BaseAddress + "login?returnUrl=", page.Url);
        await WebUiTests.LogInAsync(page, username, password);
        await page.WaitForURLAsync(fixture.AppOrigin + "/dashboard?tab=2");
        var echo = JsonDocument.Parse(await page.InnerTextAsync("body")).RootElement;
        Assert.Equal(username, echo.GetProperty("headers").GetProperty("x-portcullis-user").GetString());
        Assert.False(echo.GetProperty("headers").TryGetProperty("cookie", out _), "the application received Portcullis's cookie");
        Assert.Contains(await context.CookiesAsync([fixture.AppOrigin]), c => c.Name == "portcullis-service" && c.HttpOnly);

        // Logging out of Portcullis ends it here too.
        await page.GotoAsync(Server.BaseAddress.ToString());
        await page.GetByRole(AriaRole.Button, new() { Name = "Log out" }).ClickAsync();
        await page.WaitForURLAsync("**/login");
        await page.GotoAsync(fixture.AppOrigin + "/dashboard");
        Assert.StartsWith(Server.BaseAddress + "login?returnUrl=", page.Url);
    }
}
