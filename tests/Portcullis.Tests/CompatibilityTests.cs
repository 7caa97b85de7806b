using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;
using static Portcullis.Tests.Infrastructure.OAuthHelpers;

namespace Portcullis.Tests;

/// <summary>
/// The clients of the tools Portcullis's users come from, unmodified, against a real server: what Daeploy's CLI and
/// Airflow's clients send (scripts that send exactly that, with python-requests as they do), and OAuth libraries
/// nobody here wrote (Debian's authlib, requests-oauthlib, PyJWT). docs/compatibility.md says what each gets.
/// </summary>
public sealed class CompatibilityTests(SqliteServer server) : IClassFixture<SqliteServer>
{
    private static JsonElement Report(DebianPython.Result result)
    {
        Assert.True(result.ExitCode == 0, $"the client script failed ({result.ExitCode}): {result.Stderr}");
        return JsonDocument.Parse(result.Stdout).RootElement;
    }

    [Fact]
    public async Task DaeploysCliLogsInCreatesTokensAndListsServices()
    {
        var (username, password, _) = await server.CreateUserAsync();
        var admin = await server.AdminTokenAsync();
        await using var upstream = await TestUpstream.StartAsync();
        foreach (var version in new[] { "1.0", "2.0" })
        {
            using var registered = await server.Client(admin).PostAsJsonAsync("/api/v1/services",
                new { name = "daeploy-model", version, upstream = upstream.Url });
            Assert.Equal(HttpStatusCode.Created, registered.StatusCode);
        }

        var report = Report(await DebianPython.RunAsync("daeploy_cli.py", [server.BaseAddress.ToString(), username], password));

        // No stored credential: "Bearer " must not count as logged in.
        Assert.Equal(401, report.GetProperty("verify_without_token").GetInt32());
        var login = report.GetProperty("login");
        Assert.True(login.GetProperty("cookie").GetBoolean(), report.ToString());
        Assert.Equal(303, login.GetProperty("redirects")[0].GetInt32());
        Assert.Equal(200, report.GetProperty("verify_with_token").GetInt32());

        var tokens = report.GetProperty("tokens").EnumerateArray().ToList();
        Assert.All(tokens, t => Assert.Equal(201, t.GetProperty("status").GetInt32()));
        foreach (var t in tokens)
            PortcullisServer.Secrets.Add(t.GetProperty("token").GetString()!);
        // Real API tokens of the person, with their rights, listed with their other tokens; `token 10` for ten days,
        // `token` with the server's default (none here: it never expires).
        foreach (var (t, days) in tokens.Zip(new int?[] { null, 10 }))
        {
            using var asToken = server.Client(t.GetProperty("token").GetString()!);
            Assert.Equal(username, (await (await asToken.GetAsync("/api/v1/me")).JsonAsync()).GetProperty("username").GetString());
            var stored = await (await asToken.GetAsync($"/api/v1/tokens/{t.GetProperty("id").GetString()}")).JsonAsync();
            Assert.Equal(["api", "services"], stored.GetProperty("scopes").EnumerateArray().Select(s => s.GetString()));
            if (days is null)
                Assert.Equal(JsonValueKind.Null, stored.GetProperty("expires_at").ValueKind);
            else
                Assert.InRange(stored.GetProperty("expires_at").GetDateTime(), DateTime.UtcNow.AddDays(10).AddMinutes(-5), DateTime.UtcNow.AddDays(10).AddMinutes(5));
        }

        // `daeploy ls` reads JSON, never the UI's login page; `main` is the version /services/daeploy-model/ reaches.
        var ls = report.GetProperty("ls");
        Assert.Equal(200, ls.GetProperty("status").GetInt32());
        Assert.Equal("application/json", ls.GetProperty("content_type").GetString());
        var listed = ls.GetProperty("services").EnumerateArray().Where(s => s.GetProperty("name").GetString() == "daeploy-model")
            .ToDictionary(s => s.GetProperty("version").GetString()!, s => s.GetProperty("main").GetBoolean());
        Assert.Equal(new Dictionary<string, bool> { ["1.0"] = false, ["2.0"] = true }, listed);

        var wrong = report.GetProperty("wrong_password");
        Assert.Equal(401, wrong.GetProperty("status").GetInt32());
        Assert.False(wrong.GetProperty("cookie").GetBoolean());
        Assert.Contains("username or password is wrong", wrong.GetProperty("detail").GetString());

        // Audited as every login is, and the cookie is a CLI access token of the first-party CLI client.
        var audit = await (await server.Client(admin).GetAsync("/api/v1/audit?limit=200")).JsonAsync();
        Assert.Contains(audit.GetProperty("events").EnumerateArray(), e => e.GetProperty("event").GetString() == "login.succeeded"
            && e.GetProperty("subject").GetString() == username && e.GetProperty("details").GetProperty("path").GetString() == "daeploy");
    }

    [Fact]
    public async Task DaeploysTokenRequestIsRefusedToClientCredentialsAndToBadBearers()
    {
        var admin = await server.AdminTokenAsync();
        var c = await server.CreateClientAsync(admin, ["api"]);
        using var asClient = server.Client(await server.ClientTokenAsync(c));
        using var refused = await asClient.PostAsJsonAsync("/auth/token", new { expire_in_days = (int?)null });
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        Assert.Contains("cannot create or change credentials", (await refused.JsonAsync()).GetProperty("detail").GetString());

        using var bad = await server.Client("pcp_not-a-token").PostAsJsonAsync("/auth/token", new { expire_in_days = 10 });
        Assert.Equal(HttpStatusCode.Unauthorized, bad.StatusCode);
        Assert.Contains("daeploy login", (await bad.JsonAsync()).GetProperty("detail").GetString());

        using var days = await server.Client(admin).PostAsJsonAsync("/auth/token", new { expire_in_days = "ten" });
        Assert.Equal(HttpStatusCode.BadRequest, days.StatusCode);
        Assert.Contains("expire_in_days", (await days.JsonAsync()).GetProperty("detail").GetString());

        // A form is always an OAuth grant, even with a stray Bearer header: it never mints an API token.
        using (var grant = new HttpRequestMessage(HttpMethod.Post, "/auth/token")
        {
            Content = new FormUrlEncodedContent([new("grant_type", "password"), new("username", "admin"), new("password", PortcullisServer.AdminPassword)]),
        })
        {
            grant.Headers.Authorization = new("Bearer", admin);
            using var answer = await server.Client().SendAsync(grant);
            Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
            var body = await answer.JsonAsync();
            PortcullisServer.Secrets.Add(body.GetProperty("access_token").GetString()!);
            Assert.False(body.TryGetProperty("Token", out _));
        }

        // Daeploy's own server read the days from the query string: that works too.
        using var query = await server.Client(admin).PostAsync("/auth/token?expire_in_days=3", null);
        Assert.Equal(HttpStatusCode.Created, query.StatusCode);
        PortcullisServer.Secrets.Add((await query.JsonAsync()).GetProperty("Token").GetString()!);
    }

    [Fact]
    public async Task ARequestWithAuthorizationIsNeverSentToAnHtmlPage()
    {
        var admin = await server.AdminTokenAsync();
        using var noRedirects = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }) { BaseAddress = server.BaseAddress };
        foreach (var (credential, status) in new[] { (admin, HttpStatusCode.NotFound), ("pcp_not-a-token", HttpStatusCode.Unauthorized) })
        {
            foreach (var path in new[] { "/", "/tokens", "/tokens/new", "/admin/users" })
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, path);
                request.Headers.Authorization = new("Bearer", credential);
                request.Headers.Accept.ParseAdd("text/html");
                using var response = await noRedirects.SendAsync(request);
                Assert.True(response.StatusCode == status, $"{path}: {(int)response.StatusCode} {response.Headers.Location}");
                Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
            }
        }
    }

    [Fact]
    public async Task AirflowsClientsGet201AndReadTheirErrors()
    {
        var (username, password, _) = await server.CreateUserAsync();
        var report = Report(await DebianPython.RunAsync("airflow_clients.py", [server.BaseAddress.ToString(), username], password));

        var readme = report.GetProperty("readme_helper").GetString()!;
        PortcullisServer.Secrets.Add(readme);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(readme).GetAsync("/api/v1/me")).StatusCode);
        var cli = report.GetProperty("airflowctl");
        Assert.Equal(201, cli.GetProperty("status").GetInt32());
        var cliToken = cli.GetProperty("access_token").GetString()!;
        PortcullisServer.Secrets.Add(cliToken);
        Assert.Equal("portcullis-cli", Payload(cliToken)["client_id"]!.GetValue<string>());
        // airflowctl reads the error only when the content type is exactly application/json.
        var wrong = report.GetProperty("airflowctl_wrong_password");
        Assert.Equal(400, wrong.GetProperty("status").GetInt32());
        Assert.Contains("'detail': 'The username or password is wrong", wrong.GetProperty("error").GetString());
        Assert.Contains("'error': 'invalid_grant'", wrong.GetProperty("error").GetString());

        // A form is answered as RFC 6749 says: 200.
        using var form = await server.PostFormAsync("/auth/token", [new("username", username), new("password", password)]);
        Assert.Equal(HttpStatusCode.OK, form.StatusCode);
        PortcullisServer.Secrets.Add((await form.JsonAsync()).GetProperty("access_token").GetString()!);
    }

    [Fact]
    public async Task OAuthLibrariesValidateTheMetadataAndTheTokens()
    {
        var (username, password, _) = await server.CreateUserAsync();
        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["api", "services"]);
        var report = Report(await DebianPython.RunAsync("oauth_libraries.py", [server.BaseAddress.ToString().TrimEnd('/'), username, c.ClientId],
            password + "\n" + c.ClientSecret));

        Assert.Empty(report.GetProperty("failures").EnumerateArray().Select(f => f.GetString()));
        var clientIds = report.GetProperty("client_ids").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString());
        Assert.Equal(new Dictionary<string, string?>
        {
            ["authlib client_credentials"] = c.ClientId,
            ["authlib password"] = "portcullis-cli",
            ["requests-oauthlib backend"] = c.ClientId,
            ["requests-oauthlib legacy"] = "portcullis-cli",
        }, clientIds);
        // A password login that names no client is issued to Portcullis itself.
        Assert.Equal("portcullis", Payload(await server.LoginAsync(username, password))["client_id"]!.GetValue<string>());
    }
}

/// <summary>Every <c>python</c> snippet of the README's "Using it from your existing tools" runs as it is, against a real server.</summary>
public sealed class ReadmeSnippetTests(SqliteServer server) : IClassFixture<SqliteServer>
{
    private static List<string> Snippets()
    {
        var readme = File.ReadAllText(Path.Combine(ClusterTests.RepositoryRoot(), "README.md"));
        var start = readme.IndexOf("## Using it from your existing tools", StringComparison.Ordinal);
        Assert.True(start >= 0, "the README has no 'Using it from your existing tools' section");
        var end = readme.IndexOf("\n## ", start + 1, StringComparison.Ordinal);
        var section = readme[start..(end < 0 ? readme.Length : end)];
        return System.Text.RegularExpressions.Regex.Matches(section, "```python\n(.*?)```", System.Text.RegularExpressions.RegexOptions.Singleline)
            .Select(m => m.Groups[1].Value).ToList();
    }

    [Fact]
    public async Task EveryPythonSnippetRunsAsItIs()
    {
        var (username, password, token) = await server.CreateUserAsync();
        var c = await server.CreateClientAsync(token, ["api", "services"]);
        await using var upstream = await TestUpstream.StartAsync();
        using (var registered = await server.Client(await server.AdminTokenAsync()).PostAsJsonAsync("/api/v1/services",
            new { name = "model", version = "1.0", upstream = upstream.Url }))
            Assert.True(registered.StatusCode is HttpStatusCode.Created or HttpStatusCode.Conflict);
        var environment = new Dictionary<string, string>
        {
            ["PORTCULLIS_URL"] = server.BaseAddress.ToString().TrimEnd('/'), ["PORTCULLIS_USERNAME"] = username, ["PORTCULLIS_PASSWORD"] = password,
            ["PORTCULLIS_CLIENT_ID"] = c.ClientId, ["PORTCULLIS_CLIENT_SECRET"] = c.ClientSecret, ["PORTCULLIS_TOKEN"] = token,
        };

        var snippets = Snippets();
        Assert.Equal(4, snippets.Count);
        var outputs = new List<string>();
        foreach (var snippet in snippets)
        {
            var run = await DebianPython.RunAsync(snippet, [], environment: environment, isCode: true);
            Assert.True(run.ExitCode == 0, $"the README snippet failed:\n{snippet}\n{run.Stderr}");
            outputs.Add(run.Stdout.Trim());
        }
        Assert.Equal(username, outputs[0]);                 // Airflow's helper: a working access token
        Assert.Equal(username, outputs[1]);                 // authlib: the client acts for its owner
        Assert.Equal($"{c.ClientId} api services", outputs[2]); // PyJWT: an RFC 9068 token of the client
        Assert.Equal("200", outputs[3]);                    // Substra's scheme through the gateway

        // BentoML's client sends the same with Bearer.
        using var bentoml = await server.Client(token).GetAsync("/services/model/health");
        Assert.Equal(HttpStatusCode.OK, bentoml.StatusCode);
    }
}
