using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using Portcullis.Security;
using Portcullis.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Portcullis.Tests;

/// <summary>
/// bad input at volume: at least 10,000 generated requests (malformed headers, random bodies
/// and content types, huge fields, control characters, path tricks) against the REST, OAuth, gateway
/// and forward-auth endpoints. Zero 5xx, no crash, and the server still serves afterwards. The
/// generator is seeded, so a failure names a request that can be replayed.
/// </summary>
public sealed class FuzzTests(SqliteServer server, ITestOutputHelper output) : IClassFixture<SqliteServer>
{
    private const int HttpRequests = 9_000;
    private const int RawRequests = 1_500;
    private const int Concurrency = 8;

    private static readonly string[] Paths =
    [
        "/auth/token", "/auth/token/cli", "/auth/introspect", "/auth/revoke", "/auth/verify", "/auth/verify?service=x",
        "/api/v1/me", "/api/v1/me/password", "/api/v1/tokens", "/api/v1/tokens/1", "/api/v1/tokens/1/rotate", "/api/v1/tokens/1/usage?days=30",
        "/api/v1/users", "/api/v1/users/admin", "/api/v1/clients", "/api/v1/clients/x/rotate-secret", "/api/v1/audit?limit=5",
        "/api/v1/keys/rotate", "/api/v1/services", "/api/v1/services/x_1", "/api/v1/managed-services",
        "/services/x/", "/services/x_1/a/b", "/services/x_1/%252e%252e/y", "/services/x_1/..;/y", "/auth/handshake?service=x&state=",
        "/auth/handshake?service=a--1-0&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&returnUrl=//evil", "/.well-known/openid-configuration", "/.well-known/jwks.json",
        "/login", "/logout", "/tokens", "/tokens/new", "/tokens/1", "/tokens/1/delete", "/services", "/admin/users", "/admin/users/admin",
        "/auth/device", "/device", "/device?user_code=BBBB-BBBB", "/device?user_code=%00%ff", "/device/approve", "/device/deny", "/admin/services", "/admin/clients", "/admin/tokens?owner=admin", "/admin/audit?before=5", "/", "/healthz", "/readyz", "/metrics", "/openapi/v1.json",
    ];

    private static readonly string[] PathTricks =
    [
        "/..", "/%2e%2e/", "/%2F", "/%252F", "//", "/./", "/%00", "/%0a", "/%ff", "/%", "/%zz", "/;x", "/\u00e9", "/%C0%AF",
        "/99999999999999999999999", "/-1", "/0", "/1e9", "/null", "/%20", "/a%09b", "/" + new string('a', 3000), "/\\..\\",
    ];

    private static readonly string[] ContentTypes =
    [
        "application/json", "application/json; charset=utf-16", "application/x-www-form-urlencoded", "multipart/form-data",
        "multipart/form-data; boundary=", "text/plain", "application/xml", "*/*", "application/json; charset=bogus", ";;;", "",
    ];

    [Fact]
    public async Task TenThousandMalformedRequestsGetNoServerErrorAndTheServerKeepsServing()
    {
        var admin = await server.AdminTokenAsync();
        using (var create = server.Client(admin))
            await create.PostAsJsonAsync("/api/v1/users", new { username = "fuzz-victim", password = "fuzz-victim-password" });
        PortcullisServer.Secrets.Add("fuzz-victim-password");
        // A real web session of the admin, with its antiforgery pair, so that the pages' POST handlers get garbage too.
        using var browser = new Browser(server.BaseAddress);
        await browser.LogInAsync("admin", PortcullisServer.AdminPassword);
        var page = await (await browser.GetAsync("/tokens/new")).Content.ReadAsStringAsync();
        var session = new Session(
            string.Join("; ", browser.Cookies.GetCookies(server.BaseAddress).Select(c => $"{c.Name}={c.Value}")),
            Browser.CsrfToken(page));
        // The fuzzer may well revoke or rotate the admin's token (id 1): it is allowed to. This one it cannot name.
        var spare = await server.CreateTokenAsync(admin, new { name = "spare" });
        var format = new TokenFormat("pc");
        var failures = new ConcurrentQueue<string>();
        var statuses = new ConcurrentDictionary<int, int>();
        var next = -1;

        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = Concurrency, UseCookies = false, AllowAutoRedirect = false })
        {
            BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(30),
        };
        await Task.WhenAll(Enumerable.Range(0, Concurrency).Select(_ => Task.Run(async () =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < HttpRequests)
            {
                var random = new Random(i);
                using var request = Generate(random, admin, format, session);
                var described = $"#{i} {request.Method} {request.RequestUri}";
                try
                {
                    using var response = await http.SendAsync(request);
                    await response.Content.ReadAsByteArrayAsync();
                    statuses.AddOrUpdate((int)response.StatusCode, 1, (_, n) => n + 1);
                    if ((int)response.StatusCode >= 500)
                        failures.Enqueue($"{described} → {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
                }
                catch (HttpRequestException e)
                {
                    failures.Enqueue($"{described} → connection failed: {e.Message}");
                }
            }
        })));

        var raw = 0;
        for (var i = 0; i < RawRequests; i++)
        {
            var text = RawRequest(new Random(1_000_000 + i), admin);
            var status = await SendRawAsync(text);
            raw++;
            // 505 is the protocol's answer to an HTTP version the server does not speak (RFC 9110 §15.6.6), not a failure.
            if (status is null or >= 500 && !(status == 505 && text.Contains(" HTTP/9.9\n", StringComparison.Ordinal)))
                failures.Enqueue($"raw #{i} → {(status is null ? "no answer" : status.ToString())}: {Escape(text[..Math.Min(200, text.Length)])}");
            statuses.AddOrUpdate(status ?? 0, 1, (_, n) => n + 1);
        }

        output.WriteLine($"{HttpRequests} HTTP + {raw} raw requests; statuses: " +
            string.Join(", ", statuses.OrderBy(s => s.Key).Select(s => $"{s.Key}: {s.Value}")));
        Assert.True(failures.IsEmpty, $"{failures.Count} requests failed; the first ones:\n" + string.Join("\n", failures.Take(10)) + ServerErrors());
        Assert.Equal(System.Net.HttpStatusCode.OK, (await server.Client().GetAsync("/healthz")).StatusCode);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await server.Client(spare).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await browser.GetAsync("/tokens")).StatusCode); // the session survived the garbage
        Assert.DoesNotContain("unhandled exception", server.Output, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>What the server logged of its failures (the exception behind a 500), so that a failure in CI can be understood from its log.</summary>
    private string ServerErrors()
    {
        var lines = server.Output.Split('\n');
        var at = Array.FindIndex(lines, l => l.Contains("fail:", StringComparison.Ordinal) || l.Contains("Exception", StringComparison.Ordinal));
        return at < 0 ? "\n(the server logged no failure)" : "\nThe server logged:\n" + string.Join('\n', lines.Skip(at).Take(40));
    }

    private sealed record Session(string Cookies, string CsrfToken);

    private static HttpRequestMessage Generate(Random r, string admin, TokenFormat format, Session session)
    {
        // One in six: a form posted to a page with a valid session and antiforgery token, and junk in the fields.
        if (r.Next(6) == 0)
        {
            // Not /logout nor changes to the admin itself: the session must live through the run to be useful.
            var target = Pick(r, ["/tokens/new", "/tokens/1/delete", "/admin/users", "/admin/users/fuzz-victim", "/admin/users/nobody", "/admin/services",
                "/admin/services/x_1/remove", "/admin/clients", "/admin/clients/client-x/delete", "/login", "/device/approve", "/device/deny"]);
            var fields = new List<KeyValuePair<string, string>> { new("csrf_token", session.CsrfToken) };
            foreach (var name in new[] { "name", "description", "expiration", "custom_date", "api", "services", "service_choice", "service", "admin",
                         "username", "password", "action", "version", "upstream", "public", "scopes", "returnUrl", "user_code" })
            {
                if (r.Next(2) == 0)
                    fields.Add(new(name, r.Next(4) switch { 0 => "", 1 => "on", 2 => RandomText(r, r.Next(1, 3000)), _ => Pick(r, ["never", "custom", "7", "-1", "disable", "promote", "password", "http://x", "9999-99-99"]) }));
            }
            var post = new HttpRequestMessage(HttpMethod.Post, target) { Content = new FormUrlEncodedContent(fields) };
            post.Headers.TryAddWithoutValidation("Cookie", session.Cookies);
            return post;
        }

        var path = Pick(r, Paths);
        if (r.Next(3) == 0 && path != "/")
            path = path.Split('?')[0] + Pick(r, PathTricks) + (r.Next(4) == 0 ? "?" + RandomText(r, r.Next(1, 200), urlSafe: true) : "");
        var method = r.Next(10) switch
        {
            < 4 => HttpMethod.Post,
            < 6 => HttpMethod.Get,
            6 => HttpMethod.Delete,
            7 => HttpMethod.Patch,
            8 => HttpMethod.Put,
            _ => new HttpMethod(Pick(r, ["HEAD", "OPTIONS", "TRACE", "PROPFIND", "X-" + r.Next(1000)])),
        };
        var request = new HttpRequestMessage(method, path);
        request.Headers.TryAddWithoutValidation("Authorization", r.Next(8) switch
        {
            0 => "Bearer " + admin,
            1 => "Bearer " + format.Generate((TokenKind)r.Next(3)),
            2 => "token " + RandomText(r, r.Next(0, 100)),
            3 => "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes(RandomText(r, r.Next(0, 80)))),
            4 => "Basic " + RandomText(r, r.Next(0, 50)),
            5 => "Bearer " + RandomText(r, r.Next(0, 3)) + "." + RandomText(r, r.Next(0, 400)) + "." + RandomText(r, r.Next(0, 90)),
            6 => RandomText(r, r.Next(0, 9000)),
            _ => "",
        });
        if (r.Next(4) == 0)
            request.Headers.TryAddWithoutValidation("Cookie", "portcullis=" + RandomText(r, r.Next(0, 500)) + "; __Host-portcullis=" + RandomText(r, 40));
        else if (r.Next(3) == 0)
        {
            // The real session of a logged-in person, and (often) a return URL of any characters: pages that
            // redirect someone logged in put it in a Location header (a non-ASCII one was a 500).
            request.Headers.TryAddWithoutValidation("Cookie", session.Cookies);
            request.Headers.Remove("Authorization"); // the session is read only without one
            if (r.Next(2) == 0)
            {
                request.Method = HttpMethod.Get;
                request.Content = null;
                request.RequestUri = new Uri("/login?returnUrl="
                    + Uri.EscapeDataString("/" + RandomText(r, r.Next(0, 40)) + Pick(r, ["\u3002", "\u00e9", "\uff0f", "\u2028", "\ud83d\ude00", "%2F", ""])), UriKind.Relative);
            }
        }
        if (r.Next(4) == 0)
            request.Headers.TryAddWithoutValidation(Pick(r, ["X-Forwarded-For", "X-Original-URI", "X-Forwarded-Uri", "X-Forwarded-Host", "X-Portcullis-User", "X_Portcullis_Scopes", "Accept"]),
                Pick(r, ["text/html", "../../etc/passwd", "127.0.0.1, ::1, garbage", "/services/x/%2e%2e/", RandomText(r, r.Next(0, 2000))]));
        if (method != HttpMethod.Get && method.Method != "HEAD" && r.Next(5) != 0)
        {
            var body = r.Next(7) switch
            {
                0 => Encoding.UTF8.GetBytes("{\"username\":\"admin\",\"password\":" + Json(r) + ",\"name\":" + Json(r) + ",\"scopes\":" + Json(r) + "}"),
                1 => Encoding.UTF8.GetBytes(new string('[', r.Next(1, 5000)) + new string(']', r.Next(0, 5000))),
                2 => Encoding.UTF8.GetBytes("grant_type=" + Pick(r, ["password", "client_credentials", "refresh_token", "", "%00", "urn:ietf:params:oauth:grant-type:device_code"]) + "&username=" +
                    Uri.EscapeDataString(RandomText(r, r.Next(0, 100))) + "&password=x&client_id=portcullis-cli&device_code=" + RandomText(r, r.Next(0, 60), urlSafe: true) + "&token=" + RandomText(r, r.Next(0, 200), urlSafe: true) + "&grant_type=x"),
                3 => RandomBytes(r, r.Next(0, 20_000)),
                4 => Encoding.UTF8.GetBytes("{\"name\":\"" + new string('n', r.Next(1, 300_000)) + "\",\"expires_in_days\":" + Pick(r, ["1e308", "-1", "99999999999", "\"7\"", "null", "[]"]) + "}"),
                5 => Encoding.UTF8.GetBytes("{\"password\":\"" + RandomText(r, 100) + "\\ud800\",\"admin\":\"yes\",\"disabled\":{},\"grace_seconds\":-5}"),
                _ => [],
            };
            request.Content = new ByteArrayContent(body);
            request.Content.Headers.TryAddWithoutValidation("Content-Type", Pick(r, ContentTypes));
        }
        return request;
    }

    /// <summary>Requests HttpClient would refuse to send: broken request lines, header syntax, framing.</summary>
    private static string RawRequest(Random r, string admin)
    {
        var path = Pick(r, Paths);
        return r.Next(11) switch
        {
            0 => $"GET {path} HTTP/1.1\nHost: x\nAuthorization: Bearer {admin}\u0000\n\n",
            1 => $"GET {path}\u0001 HTTP/1.1\nHost: x\n\n",
            2 => $"POST {path} HTTP/1.1\nHost: x\nContent-Length: 5\nContent-Length: 7\n\nabcde",
            3 => $"POST {path} HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\nzz\nabc\n0\n\n",
            4 => $"GET {path} HTTP/1.1\nHost: x\nBad Header: y\n\n",
            5 => $"GET {path} HTTP/1.1\nHost: x\nX-Portcullis-User: admin\nX-Portcullis-User: root\nAuthorization: token {RandomText(r, 40)}\n\n",
            6 => $"GET {path} HTTP/9.9\nHost: x\n\n",
            7 => $"GET {path} HTTP/1.1\nHost: x\nAuthorization: Bearer {new string('A', 40_000)}\n\n",
            8 => $"{RandomText(r, r.Next(1, 20))} {path} HTTP/1.1\nHost: x\n\n",
            // A service origin's host: its /.portcullis/ paths and everything else of the service, with junk.
            9 => $"GET {Pick(r, ["/.portcullis/callback?code=" + RandomText(r, 43), "/.portcullis/start?returnUrl=" + RandomText(r, 30), "/.portcullis/x", path])} HTTP/1.1\nHost: {Pick(r, ["x", "x--1", "a-b", RandomText(r, 8)])}.localhost\nAccept: text/html\nCookie: portcullis-service={RandomText(r, 43)}; portcullis-state={RandomText(r, 43)}\n\n",
            _ => $"GET {path}?{RandomText(r, r.Next(1, 300), urlSafe: true)} HTTP/1.1\nHost: x\nAuthorization: Basic {RandomText(r, 30)}\nContent-Type: {Pick(r, ContentTypes)}\n\n",
        };
    }

    private async Task<int?> SendRawAsync(string text)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(server.BaseAddress.Host, server.BaseAddress.Port);
        await using var stream = tcp.GetStream();
        stream.ReadTimeout = 10_000;
        try
        {
            await stream.WriteAsync(Encoding.Latin1.GetBytes(text.Replace("Host: x\n", "Host: x\nConnection: close\n").Replace("\n", "\r\n")));
        }
        catch (IOException)
        {
            // The server closed the connection early: also an answer, if it sent a status first.
        }
        var buffer = new byte[64];
        var read = 0;
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            while (read < 12)
            {
                var n = await stream.ReadAsync(buffer.AsMemory(read), cts.Token);
                if (n == 0)
                    break;
                read += n;
            }
        }
        catch (IOException)
        {
        }
        var head = Encoding.Latin1.GetString(buffer, 0, read);
        // Closing the connection without a response is how Kestrel answers some garbage; that is not a 5xx.
        if (read == 0)
            return 0;
        return head.StartsWith("HTTP/1.1 ", StringComparison.Ordinal) && int.TryParse(head.AsSpan(9, 3), out var status) ? status : null;
    }

    private static string Json(Random r) => r.Next(6) switch
    {
        0 => "null",
        1 => r.NextInt64().ToString(),
        2 => "\"" + RandomText(r, r.Next(0, 100)).Replace("\\", "").Replace("\"", "") + "\"",
        3 => "[" + string.Join(",", Enumerable.Range(0, r.Next(0, 5)).Select(_ => "\"" + Pick(r, ["api", "admin", "services:x", "services:", "", "ADMIN"]) + "\"")) + "]",
        4 => "{\"a\":" + new string('[', 100) + new string(']', 100) + "}",
        _ => "true",
    };

    private static string RandomText(Random r, int length, bool urlSafe = false)
    {
        const string safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%";
        var chars = new char[length];
        for (var i = 0; i < length; i++)
            chars[i] = urlSafe ? safe[r.Next(safe.Length)] : (char)r.Next(0x20, 0x7f);
        return new string(chars);
    }

    private static byte[] RandomBytes(Random r, int length)
    {
        var bytes = new byte[length];
        r.NextBytes(bytes);
        return bytes;
    }

    private static T Pick<T>(Random r, IReadOnlyList<T> items) => items[r.Next(items.Count)];

    private static string Escape(string s) => string.Concat(s.Select(c => c is < ' ' or > '~' ? $"\\x{(int)c:x2}" : c.ToString()));
}
