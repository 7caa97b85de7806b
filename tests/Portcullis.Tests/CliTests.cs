using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Portcullis.Security;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>docs/cli.md: the built <c>portcullis</c> CLI run as a separate process against a real server.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class CliTests(SqliteServer server) : IClassFixture<SqliteServer>, IDisposable
{
    private readonly string _config = Directory.CreateTempSubdirectory("portcullis-cli-").FullName;

    public void Dispose() => Directory.Delete(_config, recursive: true);

    private Task<CliRun.Result> RunAsync(string args, string? stdin = null, Dictionary<string, string>? env = null) =>
        CliRun.RunAsync(_config, args, stdin, env);

    private string Url => server.BaseAddress.ToString().TrimEnd('/');

    private async Task LoginAsync()
    {
        var login = await RunAsync($"login --host {Url} --username admin --password-stdin", PortcullisServer.AdminPassword + "\n");
        Assert.True(login.ExitCode == 0, login.Err);
        Assert.Equal($"Logged in to {Url} as admin\n", login.Out);
    }

    private string StoredToken() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(_config, "credentials.json"))).RootElement.GetProperty("contexts")[0].GetProperty("api_token").GetString()!;

    [Fact]
    public async Task LoginStoresACliJwtNeverThePasswordInAPrivateFile()
    {
        await LoginAsync();
        var file = Path.Combine(_config, "credentials.json");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(_config));
        var text = await File.ReadAllTextAsync(file);
        Assert.DoesNotContain(PortcullisServer.AdminPassword, text);
        var jwt = StoredToken();
        PortcullisServer.Secrets.Add(jwt);
        Assert.StartsWith("eyJ", jwt);

        // Looser permissions are repaired by the next command.
        File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        var who = await RunAsync("whoami --json");
        Assert.Equal(0, who.ExitCode);
        var me = JsonDocument.Parse(who.Out).RootElement;
        Assert.Equal("admin", me.GetProperty("username").GetString());
        Assert.Equal("jwt", me.GetProperty("auth").GetProperty("kind").GetString());
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        Assert.DoesNotContain(jwt, who.Out + who.Err);
    }

    [Fact]
    public async Task TokenDaysPrintsTheActiveHostHowToUseItAndATokenThatWorks()
    {
        await LoginAsync();
        var run = await RunAsync("token 30");
        Assert.True(run.ExitCode == 0, run.Err);
        var lines = run.Out.TrimEnd().Split('\n');
        Assert.Equal($"Active host: {Url}", lines[0]);
        Assert.Contains("Authorization: Bearer <token>", lines[1]);
        var token = lines[2];
        PortcullisServer.Secrets.Add(token);
        Assert.True(new TokenFormat("pc").TryRead(token, out _));
        var me = await (await server.Client(token).GetAsync("/api/v1/me")).JsonAsync();
        Assert.Equal(["api", "services"], me.GetProperty("auth").GetProperty("scopes").EnumerateArray().Select(s => s.GetString()));
        var listed = JsonDocument.Parse((await RunAsync("token list --json")).Out).RootElement.EnumerateArray().Single(t => token.StartsWith(t.GetProperty("token_hint").GetString()!.TrimEnd('…')));
        Assert.NotEqual(JsonValueKind.Null, listed.GetProperty("expires_at").ValueKind);
        Assert.DoesNotContain("never expires", run.Err);
    }

    [Fact]
    public async Task TokenRunsWithinTheSameSecondEachGetATokenOfTheirOwn()
    {
        await LoginAsync();
        var runs = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => RunAsync("token 30 --json")));
        Assert.All(runs, run => Assert.True(run.ExitCode == 0, run.Err));
        var created = runs.Select(run => JsonDocument.Parse(run.Out).RootElement).ToList();
        foreach (var token in created.Select(c => c.GetProperty("token").GetString()!))
            PortcullisServer.Secrets.Add(token);
        var names = created.Select(c => c.GetProperty("name").GetString()!).ToList();
        Assert.Equal(3, names.Distinct().Count());
        Assert.All(names, name => Assert.Matches("^cli-[0-9]{8}-[0-9]{6}(-[0-9]+)?$", name));
    }

    [Fact]
    public async Task TokenWithoutDaysWarnsOnStderrThatItNeverExpires()
    {
        await LoginAsync();
        var run = await RunAsync("token");
        Assert.True(run.ExitCode == 0, run.Err);
        var token = run.Out.TrimEnd().Split('\n')[^1];
        PortcullisServer.Secrets.Add(token);
        Assert.True(new TokenFormat("pc").TryRead(token, out _));
        Assert.Contains("Warning: this token never expires", run.Err);
        Assert.Contains("portcullis token 30", run.Err);
    }

    [Fact]
    public async Task LoginWithATokenWithoutApiAccessIsRefusedSayingWhatItLacks()
    {
        var jwt = await server.LoginAsync();
        var servicesOnly = await server.CreateTokenAsync(jwt, new { name = "services-only-" + Guid.NewGuid().ToString("N")[..6], scopes = new[] { "services" } });
        var login = await RunAsync($"login --host {Url} --api-token-stdin", servicesOnly + "\n");
        Assert.Equal(1, login.ExitCode);
        Assert.Contains("Developer Operations Access", login.Err);
        Assert.Contains("'services'", login.Err);
        Assert.False(File.Exists(Path.Combine(_config, "credentials.json")) && File.ReadAllText(Path.Combine(_config, "credentials.json")).Contains(servicesOnly));

        var apiToken = await server.CreateTokenAsync(jwt, new { name = "api-" + Guid.NewGuid().ToString("N")[..6], scopes = new[] { "api" } });
        Assert.Equal(0, (await RunAsync($"login --host {Url} --api-token-stdin", apiToken + "\n")).ExitCode);
        Assert.Contains("with an API token (api)", (await RunAsync("whoami")).Out);
    }

    [Fact]
    public async Task TokensAreCreatedShownRotatedAndRevokedByName()
    {
        await LoginAsync();
        var created = JsonDocument.Parse((await RunAsync("token create deploy --expires 7d --scope services --description \"CI deploys\" --json")).Out).RootElement;
        var first = created.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(first);
        Assert.Equal(["services"], created.GetProperty("scopes").EnumerateArray().Select(s => s.GetString()));

        var show = await RunAsync("token show deploy");
        Assert.Contains("CI deploys", show.Out);
        Assert.DoesNotContain(first, show.Out);
        var shown = JsonDocument.Parse((await RunAsync("token show deploy --json")).Out).RootElement;
        foreach (var field in new[] { "id", "name", "description", "token_hint", "scopes", "created_at", "expires_at", "last_used_at", "last_used_ip", "status" })
            Assert.True(shown.TryGetProperty(field, out _), $"token show --json lacks '{field}'");

        var rotated = await RunAsync("token rotate deploy");
        Assert.Equal(0, rotated.ExitCode);
        var second = rotated.Out.TrimEnd().Split('\n')[^1];
        PortcullisServer.Secrets.Add(second);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(first).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(second).GetAsync("/api/v1/me")).StatusCode);

        Assert.Equal(0, (await RunAsync("token revoke deploy")).ExitCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(second).GetAsync("/api/v1/me")).StatusCode);
        var missing = await RunAsync("token revoke deploy");
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("no active token named 'deploy'", missing.Err);

        // The server's own validation messages are passed through.
        var bad = await RunAsync("token create \"\" --expires 5y");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("--expires '5y'", bad.Err);
        var unbounded = await RunAsync("token create x --scope galaxy");
        Assert.Equal(1, unbounded.ExitCode);
        Assert.Contains("galaxy", unbounded.Err);
    }

    [Fact]
    public async Task TokenPoliciesAreSetWithFlagsAndShown()
    {
        await LoginAsync();
        var created = await RunAsync("token create ci-job --uses 2 --allow-from 127.0.0.0/8 --allow-from 2001:db8::/32 --rate 100/s --rate 1000/m");
        Assert.Equal(0, created.ExitCode);
        Assert.Contains("works for 2 requests, only from 127.0.0.0/8, 2001:db8::/32, at most 100/s and 1000/m", created.Out);
        var token = created.Out.TrimEnd().Split('\n')[^1];
        PortcullisServer.Secrets.Add(token);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);

        var show = await RunAsync("token show ci-job");
        Assert.Contains("1 of 2 used", show.Out);
        Assert.Contains("127.0.0.0/8 2001:db8::/32", show.Out);
        Assert.Contains("100/s and 1000/m", show.Out);

        var handed = await RunAsync("token create handed --link --link-minutes 30");
        Assert.Equal(0, handed.ExitCode);
        Assert.Contains("Hand over this link: it shows the token once", handed.Out);
        var url = handed.Out.TrimEnd().Split('\n')[^1];
        Assert.StartsWith(Url + "/claim/", url);
        PortcullisServer.Secrets.Add(url[(url.LastIndexOf('/') + 1)..]);

        var hourly = await RunAsync("token create hourly --rate 5/h");
        Assert.Equal(2, hourly.ExitCode);
        Assert.Contains("the unit is s (per second) or m (per minute)", hourly.Err);

        var bad = await RunAsync("token create elsewhere --allow-from 10.0.0.1/8");
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("written 10.0.0.0/8", bad.Err);
    }

    [Fact]
    public async Task ATokenIsNarrowedToWhatItUsed()
    {
        await LoginAsync();
        var token = (await RunAsync("token create narrow-me")).Out.TrimEnd().Split('\n')[^1];
        PortcullisServer.Secrets.Add(token);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(token).GetAsync("/api/v1/tokens")).StatusCode);
        // The use is written behind; the dry run shows it once it is.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        CliRun.Result dry;
        while (!(dry = await RunAsync("token narrow narrow-me --dry-run")).Out.Contains("narrowing would keep api") && DateTime.UtcNow < deadline)
            await Task.Delay(200);
        Assert.Contains("It has api services; narrowing would keep api.", dry.Out);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(token).GetAsync("/api/v1/tokens")).StatusCode);

        var narrowed = await RunAsync("token narrow narrow-me");
        Assert.Equal(0, narrowed.ExitCode);
        Assert.Contains("from api services to api.", narrowed.Out);
        Assert.Contains("nothing to narrow", (await RunAsync("token narrow narrow-me")).Out);
    }

    [Fact]
    public async Task WebhooksAreAddedListedAndRemoved()
    {
        await LoginAsync();
        var added = await RunAsync("webhook add https://hooks.invalid/portcullis --event token.leaked --event token.revoked");
        Assert.Equal(0, added.ExitCode);
        Assert.Contains("for token.leaked, token.revoked", added.Out);
        var secret = added.Out.TrimEnd().Split(' ')[^1];
        Assert.Equal(64, secret.Length);
        PortcullisServer.Secrets.Add(secret);
        var list = await RunAsync("webhook list");
        Assert.Contains("https://hooks.invalid/portcullis", list.Out);
        Assert.DoesNotContain(secret, list.Out);
        Assert.Contains("LAST ANSWER", (await RunAsync("webhook deliveries")).Out);
        var id = JsonDocument.Parse((await RunAsync("webhook list --json")).Out).RootElement[0].GetProperty("id").GetInt64();
        Assert.Equal(0, (await RunAsync($"webhook remove {id}")).ExitCode);
        Assert.DoesNotContain("hooks.invalid", (await RunAsync("webhook list")).Out);

        var bad = await RunAsync("webhook add https://hooks.invalid/x --event token.created");
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("'token.created' is not an event a webhook can hear", bad.Err);
    }

    [Fact]
    public async Task LogoutRevokesTheCredentialOnTheServerThenForgetsIt()
    {
        await LoginAsync();
        var jwt = StoredToken();
        PortcullisServer.Secrets.Add(jwt);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);
        var logout = await RunAsync("logout");
        Assert.Equal(0, logout.ExitCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);
        var who = await RunAsync("whoami");
        Assert.Equal(1, who.ExitCode);
        Assert.Contains("portcullis login", who.Err);
    }

    [Fact]
    public async Task ContextsArePerServerAndTheEnvironmentOverridesThem()
    {
        await LoginAsync();
        var other = $"http://localhost:{server.BaseAddress.Port}";
        Assert.Equal(0, (await RunAsync($"login --host {other} --username admin --password-stdin", PortcullisServer.AdminPassword + "\n")).ExitCode);
        var contexts = JsonDocument.Parse((await RunAsync("context list --json")).Out).RootElement.EnumerateArray().ToList();
        Assert.Equal(2, contexts.Count);
        Assert.Equal($"localhost:{server.BaseAddress.Port}", contexts.Single(c => c.GetProperty("current").GetBoolean()).GetProperty("name").GetString());

        Assert.Equal(0, (await RunAsync($"context use 127.0.0.1:{server.BaseAddress.Port}")).ExitCode);
        var current = JsonDocument.Parse((await RunAsync("context current --json")).Out).RootElement;
        Assert.Equal(["name", "endpoint", "username", "api_token"], current.EnumerateObject().Select(p => p.Name));
        Assert.Equal(Url, current.GetProperty("endpoint").GetString());
        Assert.Equal(1, (await RunAsync("context use nowhere")).ExitCode);

        // PORTCULLIS_URL and PORTCULLIS_TOKEN win over the stored context (for CI).
        var (name, _, token) = await server.CreateUserAsync();
        var who = JsonDocument.Parse((await RunAsync("whoami --json", env: new() { ["PORTCULLIS_URL"] = other, ["PORTCULLIS_TOKEN"] = token })).Out).RootElement;
        Assert.Equal(name, who.GetProperty("username").GetString());
    }

    [Fact]
    public async Task EveryCommandHasHelpWithAnExample()
    {
        foreach (var command in new[] { "login", "logout", "whoami", "token", "token create", "token list", "token show", "token revoke", "token rotate",
                     "context", "context list", "context use", "context current", "service list", "service add", "service remove", "user list", "user add",
                     "user disable", "user remove", "user passwd", "client create", "client list", "client delete", "client rotate-secret", "keys rotate", "scan" })
        {
            var help = await RunAsync(command + " --help");
            Assert.True(help.ExitCode == 0, $"{command} --help failed: {help.Err}");
            Assert.True(help.Out.Contains("Example", StringComparison.Ordinal), $"`portcullis {command} --help` has no example");
        }
    }

    [Fact]
    public async Task TwoCliRunsAtOnceKeepBothContexts()
    {
        var first = RunAsync($"login --host {Url} --username admin --password-stdin", PortcullisServer.AdminPassword + "\n");
        var second = RunAsync($"login --host http://localhost:{server.BaseAddress.Port} --username admin --password-stdin", PortcullisServer.AdminPassword + "\n");
        Assert.All(await Task.WhenAll(first, second), r => Assert.Equal(0, r.ExitCode));
        var contexts = JsonDocument.Parse((await RunAsync("context list --json")).Out).RootElement.EnumerateArray().Select(c => c.GetProperty("endpoint").GetString()).ToList();
        Assert.Contains(Url, contexts);
        Assert.Contains($"http://localhost:{server.BaseAddress.Port}", contexts);
        Assert.Empty(Directory.GetFiles(_config, "*.tmp*"));
    }

    [Fact]
    public async Task ErrorsSayWhatToDoWithExitCodes()
    {
        var unreachable = await RunAsync("whoami", env: new() { ["PORTCULLIS_URL"] = "http://127.0.0.1:9", ["PORTCULLIS_TOKEN"] = "x" });
        Assert.Equal(1, unreachable.ExitCode);
        Assert.Contains("cannot reach http://127.0.0.1:9", unreachable.Err);

        var revoked = await server.CreateTokenAsync(await server.AdminTokenAsync(), new { name = "soon-gone" });
        using (var admin = server.Client(revoked))
        {
            var id = (await (await admin.GetAsync("/api/v1/me")).JsonAsync()).GetProperty("auth").GetProperty("token_id").GetString();
            await admin.DeleteAsync($"/api/v1/tokens/{id}");
        }
        var refused = await RunAsync("token list", env: new() { ["PORTCULLIS_URL"] = Url, ["PORTCULLIS_TOKEN"] = revoked });
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("log in again with `portcullis login`", refused.Err);

        var usage = await RunAsync("token frobnicate");
        Assert.Equal(2, usage.ExitCode);
        var help = await RunAsync("token create --help");
        Assert.Equal(0, help.ExitCode);
        Assert.Contains("Example", help.Out);
        var wrongPassword = await RunAsync($"login --host {Url} --username admin --password-stdin", "wrong-password-x\n");
        Assert.Equal(1, wrongPassword.ExitCode);
        Assert.Contains("username or password is wrong", wrongPassword.Err);
        var noTerminal = await RunAsync($"login --host {Url} --username admin");
        Assert.Equal(2, noTerminal.ExitCode);
        Assert.Contains("--password-stdin", noTerminal.Err);
    }

    [Fact]
    public async Task ScanFindsRealTokensOnlyAndCanRevokeThem()
    {
        var (_, _, token) = await server.CreateUserAsync();
        var lookalike = Tampering.LastCharacterChanged(token); // same shape, wrong checksum
        var dir = Directory.CreateTempSubdirectory("portcullis-scan-").FullName;
        try
        {
            await File.WriteAllTextAsync(Path.Combine(dir, "app.env"), $"# settings\nAPI_TOKEN={token}\nOTHER={lookalike}\n");
            Directory.CreateDirectory(Path.Combine(dir, "sub"));
            await File.WriteAllTextAsync(Path.Combine(dir, "sub", "clean.txt"), "nothing here pcp_short\n");

            var found = await RunAsync($"scan {dir}");
            Assert.Equal(1, found.ExitCode);
            Assert.Equal($"{Path.Combine(dir, "app.env")}:2: {token[..8]}…\n", found.Out);
            Assert.DoesNotContain(token, found.Out + found.Err);
            Assert.Equal(0, (await RunAsync($"scan {Path.Combine(dir, "sub")}")).ExitCode);

            var revoke = await RunAsync($"scan {dir} --revoke --json", env: new() { ["PORTCULLIS_URL"] = Url });
            Assert.Equal(1, revoke.ExitCode);
            Assert.Equal(1, JsonDocument.Parse(revoke.Out).RootElement.GetProperty("revoked").GetInt32());
            Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task AdminsManageUsersClientsServicesAndKeys()
    {
        await LoginAsync();
        var user = "cli-" + Guid.NewGuid().ToString("N")[..6];
        Assert.Equal(0, (await RunAsync($"user add {user} --password-stdin", "cli-user-password-1\n")).ExitCode);
        PortcullisServer.Secrets.Add("cli-user-password-1");
        Assert.Contains(user, (await RunAsync("user list")).Out);
        Assert.Equal(0, (await RunAsync($"user disable {user}")).ExitCode);
        Assert.True(JsonDocument.Parse((await RunAsync("user list --json")).Out).RootElement.EnumerateArray()
            .Single(u => u.GetProperty("username").GetString() == user).GetProperty("disabled").GetBoolean());

        var client = JsonDocument.Parse((await RunAsync("client create cli-client --scope services --json")).Out).RootElement;
        PortcullisServer.Secrets.Add(client.GetProperty("client_secret").GetString()!);
        Assert.Contains(client.GetProperty("client_id").GetString()!, (await RunAsync("client list")).Out);
        Assert.Equal(0, (await RunAsync($"client delete {client.GetProperty("client_id").GetString()}")).ExitCode);

        var added = await RunAsync("service add cli-svc 1.0 http://127.0.0.1:9 http://127.0.0.1:1 --health-check /healthz --health-interval 5");
        Assert.Equal(0, added.ExitCode);
        Assert.Contains("2 upstreams", added.Out);
        Assert.Contains("browsers use http://cli-svc--1-0.localhost:", added.Out);
        var listed = (await RunAsync("service list")).Out;
        Assert.Contains("cli-svc", listed);
        Assert.Contains("http://127.0.0.1:9 (", listed);
        var health = JsonDocument.Parse((await RunAsync("service list --json")).Out).RootElement.EnumerateArray()
            .Single(s => s.GetProperty("name").GetString() == "cli-svc").GetProperty("destinations");
        Assert.Equal(2, health.GetArrayLength());
        Assert.Equal(0, (await RunAsync("service remove cli-svc 1.0")).ExitCode);

        var keys = await RunAsync("keys rotate --json");
        Assert.Equal(0, keys.ExitCode);
        Assert.True(JsonDocument.Parse(keys.Out).RootElement.TryGetProperty("kid", out _));
    }
}
