using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.WebSockets;
using System.Text;
using Portcullis.Security;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>A real portcullis process with services from configuration in front of <see cref="TestUpstream"/>.</summary>
public sealed class GatewayFixture : IAsyncLifetime
{
    public TestUpstream Upstream { get; private set; } = null!;
    public PortcullisServer Server { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Upstream = await TestUpstream.StartAsync();
        var settings = new Dictionary<string, string>
        {
            // Loopback is not a trusted proxy here, so the tests' X-Forwarded-* must be replaced.
            ["Gateway:TrustedProxies:0"] = "192.0.2.1/32",
            ["Gateway:UpstreamTimeout"] = "00:00:02",
        };
        var services = new (string Name, string Upstream, bool Protected)[]
        {
            ("echo", Upstream.Url + "/echo", true), ("open", Upstream.Url + "/echo", false), ("secret", Upstream.Url + "/echo", true),
            ("raw", Upstream.Url, true), ("down", "http://127.0.0.1:9", true),
            ("c", Upstream.Url + "/c-base", true), ("d", Upstream.Url + "/d-admin", true),
        };
        for (var i = 0; i < services.Length; i++)
        {
            settings[$"Gateway:Services:{i}:Name"] = services[i].Name;
            settings[$"Gateway:Services:{i}:Version"] = "1";
            settings[$"Gateway:Services:{i}:Upstream"] = services[i].Upstream;
            settings[$"Gateway:Services:{i}:Protected"] = services[i].Protected ? "true" : "false";
        }
        Server = PortcullisServer.With(Provider.Sqlite, settings);
        await Server.InitializeAsync();
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        await Upstream.DisposeAsync();
    }
}

/// <summary>docs/gateway.md: the built-in gateway.</summary>
public sealed class GatewayTests(GatewayFixture fixture) : IClassFixture<GatewayFixture>
{
    private PortcullisServer Server => fixture.Server;

    private async Task<string> TokenAsync(params string[] scopes)
    {
        var (_, _, token) = await Server.CreateUserAsync();
        return scopes.Length == 0 ? token : await Server.CreateTokenAsync(token, new { name = "t-" + Guid.NewGuid().ToString("N")[..8], scopes });
    }

    [Fact]
    public async Task AValidTokenReachesTheServiceWhichSeesWhoCallsButNoCredentialOrForgedHeader()
    {
        var (username, _, token) = await Server.CreateUserAsync();
        using var client = Server.Client();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/services/echo_1/a/b?x=1&y=%20z") { Content = new StringContent("hello", Encoding.UTF8, "text/plain") };
        request.Headers.Authorization = new AuthenticationHeaderValue("token", token);
        request.Headers.TryAddWithoutValidation("Cookie", "portcullis=session-value; theirs=kept; __Host-portcullis=x; daeploy=cli-login-token");
        foreach (var forged in new[] { "X-Portcullis-User", "x-portcullis-scopes", "X_Portcullis_Token_Id", "X-PORTCULLIS-Extra" })
            request.Headers.TryAddWithoutValidation(forged, "admin");
        request.Headers.TryAddWithoutValidation("X-Forwarded-For", "203.0.113.9");
        request.Headers.TryAddWithoutValidation("X-Forwarded-Host", "evil.example");
        request.Headers.TryAddWithoutValidation("Connection", "X-Hop");
        request.Headers.TryAddWithoutValidation("X-Hop", "dropped");
        request.Headers.TryAddWithoutValidation("X-End-To-End", "kept");
        var echo = await TestUpstream.EchoAsync(await client.SendAsync(request));

        Assert.Equal("POST", echo.GetProperty("method").GetString());
        Assert.Equal("/echo/a/b", echo.GetProperty("path").GetString());
        Assert.Equal("?x=1&y=%20z", echo.GetProperty("query").GetString());
        Assert.Equal(5, echo.GetProperty("body_length").GetInt64());
        var headers = echo.GetProperty("headers");
        Assert.Equal(username, headers.GetProperty("x-portcullis-user").GetString());
        Assert.Equal("api services", headers.GetProperty("x-portcullis-scopes").GetString());
        Assert.False(string.IsNullOrEmpty(headers.GetProperty("x-portcullis-token-id").GetString()));
        Assert.False(headers.TryGetProperty("x_portcullis_token_id", out _));
        Assert.False(headers.TryGetProperty("x-portcullis-extra", out _));
        Assert.False(headers.TryGetProperty("authorization", out _));
        Assert.Equal("theirs=kept", headers.GetProperty("cookie").GetString());
        Assert.Equal("127.0.0.1", headers.GetProperty("x-forwarded-for").GetString());
        Assert.Equal($"127.0.0.1:{Server.BaseAddress.Port}", headers.GetProperty("x-forwarded-host").GetString());
        Assert.Equal("http", headers.GetProperty("x-forwarded-proto").GetString());
        Assert.Equal("/services/echo_1", headers.GetProperty("x-forwarded-prefix").GetString());
        Assert.False(headers.TryGetProperty("x-hop", out _));
        Assert.Equal("kept", headers.GetProperty("x-end-to-end").GetString());
    }

    [Fact]
    public async Task MissingBadAndInsufficientCredentialsAreAnsweredAsRfc6750Says()
    {
        using var anonymous = Server.Client();
        using var none = await anonymous.GetAsync("/services/echo_1/");
        Assert.Equal(HttpStatusCode.Unauthorized, none.StatusCode);
        Assert.Equal("Bearer realm=\"portcullis\"", none.Headers.WwwAuthenticate.ToString());

        using var bad = await Server.Client(new TokenFormat("pc").Generate(TokenKind.Personal)).GetAsync("/services/echo_1/");
        Assert.Equal(HttpStatusCode.Unauthorized, bad.StatusCode);
        Assert.Contains("error=\"invalid_token\"", bad.Headers.WwwAuthenticate.ToString());

        using var apiOnly = await Server.Client(await TokenAsync("api")).GetAsync("/services/echo_1/");
        Assert.Equal(HttpStatusCode.Forbidden, apiOnly.StatusCode);
        Assert.Contains("error=\"insufficient_scope\"", apiOnly.Headers.WwwAuthenticate.ToString());
        Assert.Contains("services:echo", apiOnly.Headers.WwwAuthenticate.ToString());

        var echoOnly = await TokenAsync("services:echo");
        Assert.Equal(HttpStatusCode.OK, (await Server.Client(echoOnly).GetAsync("/services/echo_1/x")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Server.Client(echoOnly).GetAsync("/services/echo/x")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Server.Client(echoOnly).GetAsync("/services/secret_1/x")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Server.Client(await Server.AdminTokenAsync()).GetAsync("/services/secret_1/x")).StatusCode);
        // No exemption by method or User-Agent.
        using var head = new HttpRequestMessage(HttpMethod.Options, "/services/echo_1/x");
        head.Headers.UserAgent.ParseAdd("kube-probe/1.29");
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.SendAsync(head)).StatusCode);
    }

    [Fact]
    public async Task AnUnprotectedServiceNeedsNoCredentialAndUnknownServicesAre404()
    {
        using var anonymous = Server.Client();
        var echo = await TestUpstream.EchoAsync(await anonymous.GetAsync("/services/open_1/hi"));
        Assert.False(echo.GetProperty("headers").TryGetProperty("x-portcullis-user", out _));
        using var unknown = await Server.Client(await Server.AdminTokenAsync()).GetAsync("/services/nothing-here/x");
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        Assert.Contains("/api/v1/services", await unknown.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task ABrowserInPathModeIsSentToTheServicesOwnOrigin()
    {
        using var client = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }) { BaseAddress = Server.BaseAddress };
        var port = Server.BaseAddress.Port;
        foreach (var (path, expected) in new[]
        {
            ("/services/echo_1/page?q=1", $"http://echo--1.localhost:{port}/page?q=1"),
            ("/services/echo/page", $"http://echo.localhost:{port}/page"),
            ("/services/echo_1", $"http://echo--1.localhost:{port}/"),
        })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, path);
            request.Headers.Accept.ParseAdd("text/html,application/xhtml+xml");
            using var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.Found, response.StatusCode);
            Assert.Equal(expected, response.Headers.Location!.OriginalString);
        }
        // A program (no Accept: text/html, or an Authorization header) is never redirected to a page.
        using var withToken = new HttpRequestMessage(HttpMethod.Get, "/services/echo_1/page");
        withToken.Headers.Accept.ParseAdd("text/html");
        withToken.Headers.Authorization = new AuthenticationHeaderValue("Bearer", await TokenAsync("services:echo"));
        Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(withToken)).StatusCode);
        // /services/echo without the slash first gains it, so that the service's relative links work.
        using var bare = await client.GetAsync("/services/echo_1?q=1");
        Assert.Equal(HttpStatusCode.TemporaryRedirect, bare.StatusCode);
        Assert.Equal("/services/echo_1/?q=1", bare.Headers.Location!.OriginalString);
    }

    [Theory]
    [InlineData("/services/echo_1/..%2F..%2Fadmin")]
    [InlineData("/services/echo_1/a%2fb")]
    [InlineData("/services/echo_1/a%5Cb")]
    [InlineData("/services/echo_1/a%252Fb")]
    [InlineData("/services/echo_1/a%00b")]
    public async Task EncodedSlashesAndTheLikeAreRefusedRatherThanInterpreted(string path)
    {
        var (status, _) = await Server.RawAsync($"GET {path} HTTP/1.1\nHost: x\nAuthorization: Bearer {await Server.AdminTokenAsync()}\nConnection: close\n");
        Assert.Equal(400, status);
    }

    /// <summary>
    /// Service c lives at /c-base and d at /d-admin on the same upstream; a token for c must never reach /d-admin,
    /// however the path is encoded. Each path is sent raw, in path mode and on c's own origin, and either refused
    /// (400, or 404 when Kestrel's own normalisation leaves no such service) or forwarded under /c-base/.
    /// </summary>
    [Theory]
    [InlineData("/%252e%252e/d-admin/secret", 400)]
    [InlineData("/%252E%252E/d-admin/secret", 400)]
    [InlineData("/.%252e/d-admin/secret", 400)]
    [InlineData("/%25252e%25252e/d-admin/secret", 400)]
    [InlineData("/%2525252e%2525252e/d-admin/secret", 400)]
    [InlineData("/..;/d-admin/secret", 400)]
    [InlineData("/.;/x", 400)]
    [InlineData("/%2e%2e;/d-admin/secret", 400)]
    [InlineData("/..%3b/d-admin/secret", 400)]
    [InlineData("/..%253B/d-admin/secret", 400)]
    [InlineData("/%5c..%5cd-admin%5csecret", 400)]
    [InlineData("/a%255cb", 400)]
    [InlineData("/%c0%ae%c0%ae/d-admin/secret", 400)]
    [InlineData("/%25c0%25ae%25c0%25ae/d-admin/secret", 400)]
    [InlineData("/%e0%80%ae%e0%80%ae/d-admin/secret", 400)]
    [InlineData("/%c0%af", 400)]
    [InlineData("/a%00b", 400)]
    [InlineData("/a%2500b", 400)]
    [InlineData("/%2f..%2fd-admin", 400)]
    [InlineData("/..%2F..%2Fd-admin", 400)]
    [InlineData("/a%252Fb", 400)]
    [InlineData("/a/b%20c?x=1", 200)]
    [InlineData("/a;b", 200)]
    [InlineData("/a%3Bb", 200)]
    [InlineData("/100%25", 200)]
    [InlineData("/caf%C3%A9", 200)]
    [InlineData("/a/./b/../c", 200)]
    public async Task PathsThatCouldLeaveTheServiceBasePathAreRefused(string rest, int expected)
    {
        var cOnly = await TokenAsync("services:c");
        foreach (var (target, host) in new[] { ("/services/c_1" + rest, "x"), (rest, $"c--1.localhost:{Server.BaseAddress.Port}") })
        {
            var (status, response) = await Server.RawAsync($"GET {target} HTTP/1.1\nHost: {host}\nAuthorization: Bearer {cOnly}\nConnection: close\n");
            Assert.True(status == expected, $"{target} on {host}: expected {expected}, got {status}: {response}");
            if (status == 200)
            {
                var path = System.Text.RegularExpressions.Regex.Match(response, "\"path\":\"([^\"]*)\"").Groups[1].Value;
                Assert.StartsWith("/c-base/", path);
                Assert.DoesNotContain("d-admin", path);
            }
            Assert.DoesNotContain("d-admin", response.Contains("\"path\"", StringComparison.Ordinal) ? response : "");
        }
    }

    [Theory]
    [InlineData("/services/c_1/%2e%2e/d-admin/secret")]
    [InlineData("/services/c_1/%2E%2e/d_1/secret")]
    [InlineData("/services/c_1/../d_1/secret")]
    public async Task DotSegmentsKestrelResolvesChooseAnotherServiceWhichIsAuthorisedAsSuch(string path)
    {
        var (status, _) = await Server.RawAsync($"GET {path} HTTP/1.1\nHost: x\nAuthorization: Bearer {await TokenAsync("services:c")}\nConnection: close\n");
        Assert.True(status is 403 or 404, $"{path}: {status}");
    }

    [Fact]
    public async Task PathModeAnswersAreSandboxedAndUpstreamsCannotSetPortcullisCookies()
    {
        using var client = Server.Client(await TokenAsync("services:raw"));
        using var response = await client.GetAsync("/services/raw_1/cookies");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var csp = Assert.Single(response.Headers.GetValues("Content-Security-Policy"));
        Assert.StartsWith("sandbox ", csp);
        Assert.DoesNotContain("allow-same-origin", csp);
        var cookies = response.Headers.GetValues("Set-Cookie").ToList();
        Assert.Equal(["theirs=kept; path=/"], cookies);
        // On the service's own origin the service keeps its origin (no sandbox), and still cannot set ours.
        using var own = new HttpRequestMessage(HttpMethod.Get, "/cookies");
        own.Headers.Host = $"raw--1.localhost:{Server.BaseAddress.Port}";
        using var ownResponse = await client.SendAsync(own);
        Assert.False(ownResponse.Headers.Contains("Content-Security-Policy"));
        Assert.Equal(["theirs=kept; path=/"], ownResponse.Headers.GetValues("Set-Cookie").ToList());
    }

    [Fact]
    public async Task DotSegmentsAreResolvedBeforeTheServiceIsChosenAndAuthorised()
    {
        // HttpClient would resolve the dots itself: send the raw request line.
        var echoOnly = await TokenAsync("services:echo");
        var (status, _) = await Server.RawAsync($"GET /services/echo_1/../secret_1/x HTTP/1.1\nHost: x\nAuthorization: Bearer {echoOnly}\nConnection: close\n");
        Assert.Equal(403, status); // it is a request for 'secret', and authorised as one
        var (encoded, _) = await Server.RawAsync($"GET /services/echo_1/%2e%2e/secret_1/x HTTP/1.1\nHost: x\nAuthorization: Bearer {echoOnly}\nConnection: close\n");
        Assert.Equal(403, encoded);
        var (inside, response) = await Server.RawAsync($"GET /services/echo_1/a/../b HTTP/1.1\nHost: x\nAuthorization: Bearer {echoOnly}\nConnection: close\n");
        Assert.Equal(200, inside);
        Assert.Contains("\"path\":\"/echo/b\"", response);
    }

    [Fact]
    public async Task TheNewestRegisteredVersionAnswersUnderTheBareName()
    {
        using var admin = Server.Client(await Server.AdminTokenAsync());
        var created = await admin.PostAsJsonAsync("/api/v1/services", new { name = "versioned", version = "1.0", upstream = fixture.Upstream.Url + "/echo/v1" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.Equal("/echo/v1/x", (await TestUpstream.EchoAsync(await admin.GetAsync("/services/versioned/x"))).GetProperty("path").GetString());
        Assert.Equal(HttpStatusCode.Created, (await admin.PostAsJsonAsync("/api/v1/services", new { name = "versioned", version = "2.0", upstream = fixture.Upstream.Url + "/echo/v2" })).StatusCode);
        Assert.Equal("/echo/v2/x", (await TestUpstream.EchoAsync(await admin.GetAsync("/services/versioned/x"))).GetProperty("path").GetString());
        Assert.Equal("/echo/v1/x", (await TestUpstream.EchoAsync(await admin.GetAsync("/services/versioned_1.0/x"))).GetProperty("path").GetString());
        Assert.Equal(HttpStatusCode.NoContent, (await admin.DeleteAsync("/api/v1/services/versioned_2.0")).StatusCode);
        Assert.Equal("/echo/v1/x", (await TestUpstream.EchoAsync(await admin.GetAsync("/services/versioned/x"))).GetProperty("path").GetString());
    }

    [Fact]
    public async Task UpstreamDownIs502AndUpstreamTooSlowIs504()
    {
        using var admin = Server.Client(await Server.AdminTokenAsync());
        using var down = await admin.GetAsync("/services/down_1/");
        Assert.Equal(HttpStatusCode.BadGateway, down.StatusCode);
        Assert.Equal("application/problem+json", down.Content.Headers.ContentType!.MediaType);
        using var slow = await admin.GetAsync("/services/raw_1/slow?ms=5000");
        Assert.Equal(HttpStatusCode.GatewayTimeout, slow.StatusCode);
        // Upstream latency is in /metrics, per service.
        var metrics = await (await Server.Client().GetAsync("/metrics")).Content.ReadAsStringAsync();
        Assert.Contains("portcullis_upstream_request_duration_seconds_count{service=\"down\"}", metrics);
        Assert.Contains("portcullis_upstream_request_duration_seconds_bucket{service=\"raw\",le=\"+Inf\"}", metrics);
        // Buckets are cumulative: never decreasing, the slow request above the smallest one, all within 30 s.
        var buckets = metrics.Split('\n').Where(l => l.StartsWith("portcullis_upstream_request_duration_seconds_bucket{service=\"raw\"", StringComparison.Ordinal))
            .Select(l => long.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(13, buckets.Count);
        Assert.Equal(buckets.Order(), buckets);
        Assert.True(buckets[0] < buckets[^1], "the request that timed out must lie above the 5 ms bucket");
        Assert.Equal(buckets[^1], buckets[^2]);
        // The upstream's own error statuses pass through untouched.
        Assert.Equal(HttpStatusCode.Conflict, (await admin.GetAsync("/services/raw_1/status/409")).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await admin.GetAsync("/services/raw_1/status/503")).StatusCode);
    }

    [Fact]
    public async Task OneGibibyteStreamsUpAndDownWithFlatMemory()
    {
        const long size = 1L << 30;
        using var client = Server.Client(await Server.AdminTokenAsync());
        client.Timeout = TimeSpan.FromMinutes(3);
        var before = PeakRssMiB();

        using var upload = new HttpRequestMessage(HttpMethod.Post, "/services/raw_1/upload") { Content = new StreamContent(new GeneratedStream(size)) };
        upload.Content.Headers.ContentLength = size;
        using var uploaded = await client.SendAsync(upload);
        Assert.Equal(HttpStatusCode.OK, uploaded.StatusCode);
        Assert.Equal(size.ToString(), await uploaded.Content.ReadAsStringAsync());

        using var download = await client.GetAsync($"/services/raw_1/download?bytes={size}", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, download.StatusCode);
        await using var body = await download.Content.ReadAsStreamAsync();
        var buffer = new byte[1 << 16];
        long received = 0;
        int n;
        while ((n = await body.ReadAsync(buffer)) > 0)
            received += n;
        Assert.Equal(size, received);

        var after = PeakRssMiB();
        Assert.True(after - before < 128, $"the server's peak memory grew from {before} MiB to {after} MiB while 2 GiB passed through");
    }

    private long PeakRssMiB()
    {
        var line = File.ReadLines($"/proc/{Server.ProcessId}/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024;
    }

    [Fact]
    public async Task WebSocketsAreForwardedAfterTheSameCheck()
    {
        var uri = new Uri($"ws://127.0.0.1:{Server.BaseAddress.Port}/services/raw_1/ws");
        using (var socket = new ClientWebSocket())
        {
            socket.Options.SetRequestHeader("Authorization", "Bearer " + await TokenAsync("services:raw"));
            await socket.ConnectAsync(uri, CancellationToken.None);
            await socket.SendAsync(Encoding.UTF8.GetBytes("ping through the gateway"), WebSocketMessageType.Text, true, CancellationToken.None);
            var buffer = new byte[256];
            var result = await socket.ReceiveAsync(buffer, CancellationToken.None);
            Assert.Equal("ping through the gateway", Encoding.UTF8.GetString(buffer, 0, result.Count));
            await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None);
        }
        using var refused = new ClientWebSocket();
        refused.Options.CollectHttpResponseDetails = true;
        await Assert.ThrowsAsync<WebSocketException>(() => refused.ConnectAsync(uri, CancellationToken.None));
        Assert.Equal(HttpStatusCode.Unauthorized, refused.HttpStatusCode);
    }

    [Fact]
    public async Task AnOpenWebSocketEndsWithinASecondOfItsTokensRevocation()
    {
        var (_, _, owner) = await Server.CreateUserAsync();
        var token = await Server.CreateTokenAsync(owner, new { name = "ws-" + Guid.NewGuid().ToString("N")[..6], scopes = new[] { "api", "services" } });
        var id = (await (await Server.Client(token).GetAsync("/api/v1/me")).JsonAsync()).GetProperty("auth").GetProperty("token_id").GetString();
        using var socket = new ClientWebSocket();
        socket.Options.SetRequestHeader("Authorization", "Bearer " + token);
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{Server.BaseAddress.Port}/services/raw_1/ws"), CancellationToken.None);
        await socket.SendAsync(Encoding.UTF8.GetBytes("still here"), WebSocketMessageType.Text, true, CancellationToken.None);
        var buffer = new byte[256];
        Assert.Equal("still here", Encoding.UTF8.GetString(buffer, 0, (await socket.ReceiveAsync(buffer, CancellationToken.None)).Count));

        Assert.Equal(HttpStatusCode.NoContent, (await Server.Client(owner).DeleteAsync($"/api/v1/tokens/{id}")).StatusCode);
        var revokedAt = System.Diagnostics.Stopwatch.StartNew();
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        var closed = false;
        try
        {
            var result = await socket.ReceiveAsync(buffer, limit.Token);
            closed = result.MessageType == WebSocketMessageType.Close;
        }
        catch (WebSocketException)
        {
            closed = true;
        }
        Assert.True(closed && !limit.IsCancellationRequested, "the WebSocket stayed open after its token was revoked");
        Assert.True(revokedAt.Elapsed < TimeSpan.FromSeconds(1.5), $"the WebSocket closed {revokedAt.Elapsed.TotalMilliseconds} ms after the revocation");
    }

    [Fact]
    public async Task ADownloadUnderWayEndsWhenItsOwnerIsDisabled()
    {
        var (username, _, token) = await Server.CreateUserAsync();
        using var client = Server.Client(token);
        using var response = await client.GetAsync("/services/raw_1/download?bytes=" + (1L << 34), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await using var body = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[1 << 16];
        Assert.True(await body.ReadAsync(buffer) > 0);

        using var admin = Server.Client(await Server.AdminTokenAsync());
        Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { disabled = true })).StatusCode);
        var disabledAt = System.Diagnostics.Stopwatch.StartNew();
        var ended = false;
        try
        {
            // Read slowly: 16 GiB would take far longer than the check's second.
            while (disabledAt.Elapsed < TimeSpan.FromSeconds(10))
            {
                if (await body.ReadAsync(buffer) == 0)
                    break;
                await Task.Delay(1);
            }
        }
        catch (Exception e) when (e is IOException or HttpRequestException)
        {
            ended = true;
        }
        Assert.True(ended, "the download went on after its owner was disabled");
        Assert.True(disabledAt.Elapsed < TimeSpan.FromSeconds(1.5), $"the download ended {disabledAt.Elapsed.TotalMilliseconds} ms after the disable");
    }

    [Fact]
    public async Task TheRegistryApiValidatesListsByScopeAndKeepsConfigurationEntries()
    {
        using var admin = Server.Client(await Server.AdminTokenAsync());
        using var invalid = await admin.PostAsJsonAsync("/api/v1/services", new { name = "Bad Name", version = "1", upstream = "ftp://x" });
        Assert.Equal(HttpStatusCode.BadRequest, invalid.StatusCode);
        var detail = (await invalid.JsonAsync()).GetProperty("detail").GetString()!;
        Assert.Contains("name 'Bad Name'", detail);
        Assert.Contains("upstream 'ftp://x'", detail);
        Assert.Equal(HttpStatusCode.Conflict, (await admin.PostAsJsonAsync("/api/v1/services", new { name = "echo", version = "1", upstream = "http://127.0.0.1:1" })).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await admin.DeleteAsync("/api/v1/services/echo_1")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await admin.DeleteAsync("/api/v1/services/nothing_1")).StatusCode);

        var user = await TokenAsync();
        Assert.Equal(HttpStatusCode.Forbidden, (await Server.Client(user).PostAsJsonAsync("/api/v1/services", new { name = "mine", version = "1", upstream = "http://127.0.0.1:1" })).StatusCode);
        var echoOnly = await TokenAsync("services:echo");
        var listed = (await (await Server.Client(echoOnly).GetAsync("/api/v1/services")).JsonAsync()).EnumerateArray().Select(s => s.GetProperty("name").GetString()).ToList();
        Assert.Contains("echo", listed);
        Assert.Contains("open", listed);
        Assert.DoesNotContain("secret", listed);
        // Upstream addresses are internal: only admins see them.
        Assert.All((await (await Server.Client(echoOnly).GetAsync("/api/v1/services")).JsonAsync()).EnumerateArray(), s => Assert.Equal("", s.GetProperty("upstream").GetString()));
    }

    /// <summary>Bytes made up as they are read: a large body without a large buffer.</summary>
    private sealed class GeneratedStream(long length) : Stream
    {
        private long _position;

        public override int Read(byte[] buffer, int offset, int count)
        {
            var n = (int)Math.Min(count, length - _position);
            buffer.AsSpan(offset, n).Fill((byte)'x');
            _position += n;
            return n;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => length;
        public override long Position { get => _position; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
