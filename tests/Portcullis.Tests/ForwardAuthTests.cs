using System.Net;
using System.Net.Http.Headers;
using Portcullis.Security;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>A server that reads the service from X-Original-URI (Gateway:ForwardAuthSource), as behind nginx.</summary>
public sealed class OriginalUriServer() : PortcullisServer(Provider.Sqlite, new() { ["Gateway:ForwardAuthSource"] = "X-Original-URI" });

/// <summary>docs/gateway.md, "Forward-auth": <c>GET /auth/verify</c>, asked directly as a proxy would.</summary>
public sealed class ForwardAuthTests(SqliteServer server, OriginalUriServer byHeader, GatewayFixture untrusted)
    : IClassFixture<SqliteServer>, IClassFixture<OriginalUriServer>, IClassFixture<GatewayFixture>
{
    private static async Task<HttpResponseMessage> VerifyAsync(PortcullisServer server, string? token, string query = "", string? originalUri = null,
        params (string Name, string Value)[] headers)
    {
        using var client = server.Client();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/auth/verify" + query);
        if (token is not null)
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        if (originalUri is not null)
            request.Headers.TryAddWithoutValidation("X-Original-URI", originalUri);
        foreach (var (name, value) in headers)
            request.Headers.TryAddWithoutValidation(name, value);
        return await client.SendAsync(request);
    }

    private static async Task<string> TokenAsync(PortcullisServer server, params string[] scopes)
    {
        var (_, _, token) = await server.CreateUserAsync();
        return await server.CreateTokenAsync(token, new { name = "t-" + Guid.NewGuid().ToString("N")[..8], scopes });
    }

    [Fact]
    public async Task AllowedCredentialsGet200WithTheIdentityHeaders()
    {
        var (username, _, token) = await server.CreateUserAsync();
        using var response = await VerifyAsync(server, token, "?service=app");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(username, response.Headers.GetValues("X-Portcullis-User").Single());
        Assert.Equal("api services", response.Headers.GetValues("X-Portcullis-Scopes").Single());
        Assert.NotEmpty(response.Headers.GetValues("X-Portcullis-Token-Id").Single());
        Assert.Contains("no-store", response.Headers.CacheControl!.ToString());
    }

    [Fact]
    public async Task MissingBadAndInsufficientCredentialsGet401Or403()
    {
        using var none = await VerifyAsync(server, null, "?service=app");
        Assert.Equal(HttpStatusCode.Unauthorized, none.StatusCode);
        Assert.Equal("Bearer realm=\"portcullis\"", none.Headers.WwwAuthenticate.ToString());
        using var bad = await VerifyAsync(server, new TokenFormat("pc").Generate(TokenKind.Personal), "?service=app");
        Assert.Equal(HttpStatusCode.Unauthorized, bad.StatusCode);
        Assert.Contains("invalid_token", bad.Headers.WwwAuthenticate.ToString());
        using var other = await VerifyAsync(server, await TokenAsync(server, "services:other"), "?service=app");
        Assert.Equal(HttpStatusCode.Forbidden, other.StatusCode);
        Assert.Contains("services:app", other.Headers.WwwAuthenticate.ToString());
        Assert.False(other.Headers.Contains("X-Portcullis-User"));
        using var apiOnly = await VerifyAsync(server, await TokenAsync(server, "api"));
        Assert.Equal(HttpStatusCode.Forbidden, apiOnly.StatusCode);
    }

    [Fact]
    public async Task TheServiceComesFromTheConfiguredHeaderOfATrustedProxyNormalised()
    {
        var echoOnly = await TokenAsync(byHeader, "services:echo");
        Assert.Equal(HttpStatusCode.OK, (await VerifyAsync(byHeader, echoOnly, originalUri: "/services/echo_1/x?y=1")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await VerifyAsync(byHeader, echoOnly, originalUri: "/services/secret/x")).StatusCode);
        // Dot segments are resolved as the upstream would: this is a request for 'secret'.
        Assert.Equal(HttpStatusCode.Forbidden, (await VerifyAsync(byHeader, echoOnly, originalUri: "/services/echo_1/../secret/x")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await VerifyAsync(byHeader, echoOnly, originalUri: "/services/echo_1/%2e%2e/secret/x")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await VerifyAsync(byHeader, echoOnly, originalUri: "/services/echo%2F..%2Fsecret/x")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await VerifyAsync(byHeader, echoOnly, originalUri: "/services/echo_1/%252e%252e/secret/x")).StatusCode);
        // Only the configured header counts: X-Forwarded-Uri alone names nothing here, so 'services' would be needed.
        Assert.Equal(HttpStatusCode.Forbidden, (await VerifyAsync(byHeader, echoOnly, headers: ("X-Forwarded-Uri", "/services/echo/x"))).StatusCode);
        // ... and ?service= is not read at all when a header is the source.
        Assert.Equal(HttpStatusCode.BadRequest, (await VerifyAsync(byHeader, echoOnly, "?service=echo")).StatusCode);
    }

    [Fact]
    public async Task TwoDisagreeingHeadersOrAMalformedUriAre400NotA500()
    {
        var echoOnly = await TokenAsync(byHeader, "services:echo");
        // Caddy and Traefik copy the client's headers and add X-Forwarded-Uri: a client-sent X-Original-URI must not win.
        using var spoofed = await VerifyAsync(byHeader, echoOnly, originalUri: "/services/echo/", headers: ("X-Forwarded-Uri", "/services/secret/x"));
        Assert.Equal(HttpStatusCode.BadRequest, spoofed.StatusCode);
        Assert.Contains("disagree", await spoofed.Content.ReadAsStringAsync());
        foreach (var malformed in new[] { "http://[::1", "//", "/services/%zz%/x", "/services/echo/%c0%ae%c0%ae/x", "relative/path", "/services/\\x", "/a\u0001b" })
        {
            using var response = await VerifyAsync(byHeader, echoOnly, originalUri: malformed);
            Assert.True((int)response.StatusCode is 400 or 403, $"{malformed}: {(int)response.StatusCode}");
        }
    }

    [Fact]
    public async Task InQueryModeTheClientsHeadersNeverChooseTheService()
    {
        var echoOnly = await TokenAsync(server, "services:echo");
        Assert.Equal(HttpStatusCode.Forbidden, (await VerifyAsync(server, echoOnly, "?service=secret", originalUri: "/services/echo/")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await VerifyAsync(server, echoOnly, "?service=echo", originalUri: "/services/secret/")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await VerifyAsync(server, echoOnly, "?service=Not_A_Name")).StatusCode);
    }

    [Fact]
    public async Task AServiceHostInXForwardedHostNamesTheServiceAndBrowsersAreToldWhereToLogIn()
    {
        var echoOnly = await TokenAsync(server, "services:echo");
        Assert.Equal(HttpStatusCode.OK, (await VerifyAsync(server, echoOnly, headers: ("X-Forwarded-Host", "echo.localhost:8000"))).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await VerifyAsync(server, echoOnly, headers: ("X-Forwarded-Host", "secret.localhost"))).StatusCode);
        // A browser without a session on that host: 401, and where the proxy should send it (a path on the application's host).
        using var browser = await VerifyAsync(server, null, headers: [("X-Forwarded-Host", "echo.localhost:8000"), ("Accept", "text/html"), ("X-Forwarded-Uri", "/page?q=1")]);
        Assert.Equal(HttpStatusCode.Unauthorized, browser.StatusCode);
        Assert.Equal("/.portcullis/start?returnUrl=%2Fpage%3Fq%3D1", browser.Headers.GetValues("X-Portcullis-Login").Single());
        // A program is not sent to a login page.
        using var program = await VerifyAsync(server, null, headers: ("X-Forwarded-Host", "echo.localhost:8000"));
        Assert.False(program.Headers.Contains("X-Portcullis-Login"));
    }

    [Fact]
    public async Task AnUntrustedClientCannotChooseTheServiceThroughHeaders()
    {
        // That server trusts only 192.0.2.1, not the loopback the test connects from: X-Original-URI is ignored,
        // so the request names no service and needs the 'services' scope itself.
        var echoOnly = await TokenAsync(untrusted.Server, "services:echo");
        Assert.Equal(HttpStatusCode.Forbidden, (await VerifyAsync(untrusted.Server, echoOnly, originalUri: "/services/echo_1/")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await VerifyAsync(untrusted.Server, await TokenAsync(untrusted.Server, "services"), originalUri: "/services/echo_1/")).StatusCode);
    }
}

/// <summary>
/// A real proxy with one of the shipped forward-auth examples (docs/examples) in front of a test application, Portcullis beside it:
/// what both proxies must do is in <see cref="ForwardAuthChecks"/>; each proxy says only how it is started.
/// </summary>
public abstract class ProxyForwardAuthTests(SqliteServer server) : IAsyncLifetime
{
    private TestUpstream _app = null!;
    private ProxyProcess _proxy = null!;
    private HttpClient _front = null!;

    /// <summary>The example's configuration with the test's ports: Portcullis's, the application's and the proxy's own.</summary>
    protected abstract Task<ProxyProcess> StartProxyAsync(string example, int portcullis, int app, int port);

    protected abstract string Example { get; }

    /// <summary>What the proxy answers when Portcullis answers 429: Caddy passes it on, nginx's auth_request knows only 2xx, 401 and 403.</summary>
    protected abstract HttpStatusCode RateLimitedStatus { get; }

    public async Task InitializeAsync()
    {
        _app = await TestUpstream.StartAsync();
        var port = PortcullisServer.FreePort();
        var example = await File.ReadAllTextAsync(Path.Combine(ClusterTests.RepositoryRoot(), "docs", "examples", Example));
        _proxy = await StartProxyAsync(example, server.BaseAddress.Port, _app.BaseAddress.Port, port);
        _front = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
    }

    public async Task DisposeAsync()
    {
        _front.Dispose();
        await _proxy.DisposeAsync();
        await _app.DisposeAsync();
    }

    [Fact]
    public async Task TheProxyLetsAllowedCallersThroughWithTheirIdentityAndStopsTheOthers()
    {
        var (username, _, token) = await server.CreateUserAsync();
        await ForwardAuthChecks.RunAsync(server, _front, username, token);
    }

    [Fact]
    public async Task ATokenLimitedToAnAddressPassesTheProxyOnlyFromItWhateverTheClientClaims()
    {
        var (_, _, person) = await server.CreateUserAsync();
        var fromThree = await server.CreateTokenAsync(person, new { name = "three-" + Guid.NewGuid().ToString("N")[..6], allowed_cidrs = new[] { "127.0.0.3/32" } });
        // The proxy itself connects to Portcullis from 127.0.0.1: a token for that address must not pass for another client.
        var fromOne = await server.CreateTokenAsync(person, new { name = "one-" + Guid.NewGuid().ToString("N")[..6], allowed_cidrs = new[] { "127.0.0.1/32" } });
        using var three = LoopbackSource.Client("127.0.0.3", _front.BaseAddress!);

        async Task<HttpStatusCode> SendAsync(HttpClient client, string token, string? claimed = null)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/page");
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            if (claimed is not null)
                request.Headers.TryAddWithoutValidation("X-Forwarded-For", claimed);
            using var response = await client.SendAsync(request);
            return response.StatusCode;
        }

        Assert.Equal(HttpStatusCode.OK, await SendAsync(three, fromThree));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(_front, fromThree));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(_front, fromThree, claimed: "127.0.0.3"));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(three, fromOne));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(_front, fromOne));
    }

    [Fact]
    public async Task ATokenOverItsRateLimitDoesNotReachTheApplication()
    {
        var (_, _, person) = await server.CreateUserAsync();
        var paced = await server.CreateTokenAsync(person, new { name = "paced-" + Guid.NewGuid().ToString("N")[..6], rate_limit = new { per_minute = 2 } });
        async Task<HttpResponseMessage> SendAsync()
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/page");
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", paced);
            return await _front.SendAsync(request);
        }
        Assert.Equal(HttpStatusCode.OK, (await SendAsync()).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await SendAsync()).StatusCode);
        using var refused = await SendAsync();
        Assert.Equal(RateLimitedStatus, refused.StatusCode);
        Assert.DoesNotContain("\"path\"", await refused.Content.ReadAsStringAsync());
        if (RateLimitedStatus == HttpStatusCode.TooManyRequests)
            Assert.True(refused.Headers.Contains("Retry-After"));
    }
}

/// <summary>The real nginx with docs/examples/nginx-forward-auth.conf.</summary>
public sealed class NginxForwardAuthTests(SqliteServer server) : ProxyForwardAuthTests(server), IClassFixture<SqliteServer>
{
    protected override string Example => "nginx-forward-auth.conf";

    protected override HttpStatusCode RateLimitedStatus => HttpStatusCode.InternalServerError;

    protected override async Task<ProxyProcess> StartProxyAsync(string example, int portcullis, int app, int port) =>
        await NginxProcess.StartAsync(example
            .Replace("server 127.0.0.1:8080;", $"server 127.0.0.1:{portcullis};")
            .Replace("server 127.0.0.1:5000;", $"server 127.0.0.1:{app};")
            .Replace("listen 127.0.0.1:8000;", $"listen 127.0.0.1:{port};"), port);
}

/// <summary>The real Caddy with docs/examples/Caddyfile.</summary>
public sealed class CaddyForwardAuthTests(SqliteServer server) : ProxyForwardAuthTests(server), IClassFixture<SqliteServer>
{
    protected override string Example => "Caddyfile";

    protected override HttpStatusCode RateLimitedStatus => HttpStatusCode.TooManyRequests;

    protected override async Task<ProxyProcess> StartProxyAsync(string example, int portcullis, int app, int port) =>
        await CaddyProcess.StartAsync(example
            .Replace("forward_auth 127.0.0.1:8080", $"forward_auth 127.0.0.1:{portcullis}")
            .Replace("reverse_proxy 127.0.0.1:5000", $"reverse_proxy 127.0.0.1:{app}")
            .Replace("http://127.0.0.1:8000", $"http://127.0.0.1:{port}"), port);
}

/// <summary>What both proxies must do with Portcullis behind them.</summary>
internal static class ForwardAuthChecks
{
    public static async Task RunAsync(PortcullisServer server, HttpClient front, string username, string token)
    {
        // Allowed: the application sees who calls, and not the token.
        using (var request = new HttpRequestMessage(HttpMethod.Get, "/some/page?x=1"))
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            // Spoofed identity: replaced by what Portcullis says.
            request.Headers.TryAddWithoutValidation("X-Portcullis-User", "admin");
            request.Headers.TryAddWithoutValidation("X-Portcullis-Scopes", "admin");
            var echo = await TestUpstream.EchoAsync(await front.SendAsync(request));
            var headers = echo.GetProperty("headers");
            Assert.Equal("/some/page", echo.GetProperty("path").GetString());
            Assert.Equal(username, headers.GetProperty("x-portcullis-user").GetString());
            Assert.Equal("api services", headers.GetProperty("x-portcullis-scopes").GetString());
            Assert.False(headers.TryGetProperty("authorization", out _), "the application received the caller's token");
        }

        // No credential: 401 with the challenge, and the application never sees the request.
        using (var request = new HttpRequestMessage(HttpMethod.Get, "/some/page"))
        {
            request.Headers.TryAddWithoutValidation("X-Portcullis-User", "admin");
            using var response = await front.SendAsync(request);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.Contains("Bearer realm=\"portcullis\"", response.Headers.WwwAuthenticate.ToString());
            Assert.DoesNotContain("\"x-portcullis-user\"", await response.Content.ReadAsStringAsync());
        }

        // A token for another service: 403.
        var other = await server.CreateTokenAsync(token, new { name = "other-" + Guid.NewGuid().ToString("N")[..6], scopes = new[] { "services:other" } });
        using (var request = new HttpRequestMessage(HttpMethod.Get, "/some/page"))
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", other);
            using var response = await front.SendAsync(request);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
            Assert.DoesNotContain("\"x-portcullis-user\"", await response.Content.ReadAsStringAsync());
        }

        // Revoked: refused at once.
        using var admin = server.Client(token);
        var id = (await (await admin.GetAsync("/api/v1/me")).JsonAsync()).GetProperty("auth").GetProperty("token_id").GetString();
        Assert.Equal(HttpStatusCode.NoContent, (await admin.DeleteAsync($"/api/v1/tokens/{id}")).StatusCode);
        using (var request = new HttpRequestMessage(HttpMethod.Get, "/some/page"))
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            Assert.Equal(HttpStatusCode.Unauthorized, (await front.SendAsync(request)).StatusCode);
        }
    }
}

/// <summary>A server that reads the service from X-Forwarded-Uri, as behind Caddy or Traefik.</summary>
public sealed class ForwardedUriServer() : PortcullisServer(Provider.Sqlite, new() { ["Gateway:ForwardAuthSource"] = "X-Forwarded-Uri" });

/// <summary>
/// The real Caddy guarding /services/NAME/... by path: Caddy copies the client's own headers into the auth request,
/// so a client-sent X-Original-URI naming a service it may reach must not open another one.
/// </summary>
public sealed class CaddyPathSpoofingTests(ForwardedUriServer server) : IClassFixture<ForwardedUriServer>, IAsyncLifetime
{
    private TestUpstream _app = null!;
    private CaddyProcess _caddy = null!;
    private HttpClient _front = null!;

    public async Task InitializeAsync()
    {
        _app = await TestUpstream.StartAsync();
        var port = PortcullisServer.FreePort();
        var config = $$"""
            {
                admin off
                auto_https off
            }
            http://127.0.0.1:{{port}} {
                forward_auth 127.0.0.1:{{server.BaseAddress.Port}} {
                    uri /auth/verify
                    copy_headers X-Portcullis-User X-Portcullis-Token-Id X-Portcullis-Scopes
                }
                reverse_proxy 127.0.0.1:{{_app.BaseAddress.Port}} {
                    header_up -Authorization
                }
            }
            """;
        _caddy = await CaddyProcess.StartAsync(config, port);
        _front = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
    }

    public async Task DisposeAsync()
    {
        _front.Dispose();
        await _caddy.DisposeAsync();
        await _app.DisposeAsync();
    }

    private async Task<HttpStatusCode> GetAsync(string path, string token, params (string Name, string Value)[] headers)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        foreach (var (name, value) in headers)
            request.Headers.TryAddWithoutValidation(name, value);
        using var response = await _front.SendAsync(request);
        return response.StatusCode;
    }

    [Fact]
    public async Task ATokenForOneServiceCannotReachAnotherWithForgedUriHeaders()
    {
        var (_, _, token) = await server.CreateUserAsync();
        var aOnly = await server.CreateTokenAsync(token, new { name = "a-only", scopes = new[] { "services:a" } });
        Assert.Equal(HttpStatusCode.OK, await GetAsync("/services/a/x", aOnly));
        Assert.Equal(HttpStatusCode.Forbidden, await GetAsync("/services/b/x", aOnly));
        Assert.Equal(HttpStatusCode.BadRequest, await GetAsync("/services/b/x", aOnly, ("X-Original-URI", "/services/a/")));
        // Caddy sets X-Forwarded-Uri itself: the client's value is replaced, and b is still b.
        Assert.Equal(HttpStatusCode.Forbidden, await GetAsync("/services/b/x", aOnly, ("X-Forwarded-Uri", "/services/a/")));
        Assert.Equal(HttpStatusCode.Forbidden, await GetAsync("/services/a/../b/x", aOnly));
    }
}
