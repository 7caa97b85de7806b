using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>docs/services.md: configured service principals and the processes Portcullis runs for them, with real processes.</summary>
public sealed class ServicesTests : IAsyncLifetime
{
    private const string ExternalToken = "external-service-token-0123456789abcdef";
    private readonly string _dir = Directory.CreateTempSubdirectory("portcullis-services-").FullName;

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        Directory.Delete(_dir, recursive: true);
        return Task.CompletedTask;
    }

    private string Script(string name, string body)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, body);
        return path;
    }

    private static Dictionary<string, string> Service(int i, string name, params (string Key, string Value)[] settings)
    {
        var result = new Dictionary<string, string> { [$"Services:{i}:name"] = name };
        foreach (var (key, value) in settings)
            result[$"Services:{i}:{key}"] = value;
        return result;
    }

    private static Dictionary<string, string> Merge(params Dictionary<string, string>[] parts) =>
        parts.SelectMany(p => p).ToDictionary(p => p.Key, p => p.Value);

    [Fact]
    public async Task AWeakTokenStopsStartUpNamingTheService()
    {
        await using var server = PortcullisServer.With(Provider.Sqlite, Service(0, "weakling", ("api_token", "only-twenty-chars-xx")));
        var e = await Assert.ThrowsAsync<InvalidOperationException>(server.InitializeAsync);
        Assert.Contains("service 'weakling'", e.Message);
        Assert.Contains("openssl rand -hex 32", e.Message);
    }

    [Fact]
    public async Task AConfiguredTokenActsAsTheServiceWithEitherSchemeAndEndsWhenTheServiceIsRemoved()
    {
        PortcullisServer.Secrets.Add(ExternalToken);
        var data = Path.Combine(_dir, "data");
        var settings = Merge(new() { ["DataDir"] = data }, Service(0, "external", ("api_token", ExternalToken), ("admin", "true")));
        await using (var server = PortcullisServer.With(Provider.Sqlite, settings))
        {
            await server.InitializeAsync();
            foreach (var scheme in new[] { "Bearer", "token" })
            {
                using var client = server.Client();
                client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue(scheme, ExternalToken);
                var me = await (await client.GetAsync("/api/v1/me")).JsonAsync();
                Assert.Equal("external", me.GetProperty("username").GetString());
                Assert.Equal("service", me.GetProperty("auth").GetProperty("kind").GetString());
                Assert.True(me.GetProperty("admin").GetBoolean());
            }
            // Shown as the service in the admin's views and the audit log.
            var tokens = await (await server.Client(ExternalToken).GetAsync("/api/v1/tokens?owner=external")).JsonAsync();
            Assert.Contains(tokens.EnumerateArray(), t => t.GetProperty("name").GetString() == "configured" && t.GetProperty("status").GetString() == "active");
            var audit = await (await server.Client(ExternalToken).GetAsync("/api/v1/audit?limit=100")).JsonAsync();
            Assert.Contains(audit.GetProperty("events").EnumerateArray(), e => e.GetProperty("event").GetString() == "service.registered" && e.GetProperty("subject").GetString() == "external");
            // The operator sees that the configured token took, JupyterHub's way, and never the token.
            Assert.Contains("Adding API token for service external", server.Output);
            await server.StopAsync();
        }
        // The same configuration again: nothing is added.
        await using (var server = PortcullisServer.With(Provider.Sqlite, settings))
        {
            await server.InitializeAsync();
            Assert.DoesNotContain("Adding API token for service", server.Output);
            await server.StopAsync();
        }
        // Gone from the configuration: its token is revoked at the next start.
        await using (var server = PortcullisServer.With(Provider.Sqlite, new() { ["DataDir"] = data }))
        {
            await server.InitializeAsync();
            Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(ExternalToken).GetAsync("/api/v1/me")).StatusCode);
        }
    }

    [Fact]
    public async Task AManagedServiceGetsItsTokenCallsTheApiAndIsReachableThroughTheGateway()
    {
        var result = Path.Combine(_dir, "me.txt");
        var script = Script("service.py", $$"""
            import json, os, time, urllib.request
            req = urllib.request.Request(os.environ["PORTCULLIS_API_URL"] + "/me", headers={"Authorization": "Bearer " + os.environ["PORTCULLIS_API_TOKEN"]})
            with urllib.request.urlopen(req) as r:
                me = json.load(r)
            with open({{JsonSerializer.Serialize(result)}}, "w") as f:
                f.write(f"{r.status} {me['username']} {me['auth']['kind']} {os.environ['PORTCULLIS_SERVICE_NAME']} {os.environ.get('PORTCULLIS_Database__ConnectionString', 'no-inherited-settings')}")
            print("hello from the managed service", flush=True)
            print("my token is " + os.environ["PORTCULLIS_API_TOKEN"], flush=True)
            time.sleep(600)
            """);
        await using var upstream = await TestUpstream.StartAsync();
        await using var server = PortcullisServer.With(Provider.Sqlite, Service(0, "worker",
            ("command:0", "python3"), ("command:1", script), ("url", upstream.Url + "/echo")));
        await server.InitializeAsync();

        await WaitUntilAsync(() => File.Exists(result) && File.ReadAllText(result).Length > 0, "the managed service did not report");
        Assert.Equal("200 worker service worker no-inherited-settings", File.ReadAllText(result));
        await WaitUntilAsync(() => server.Output.Contains("[worker] hello from the managed service"), "the service's output was not logged under its name");
        await WaitUntilAsync(() => server.Output.Contains("[worker] my token is [token]"), "a token the service printed was not masked in the log");

        var admin = await server.AdminTokenAsync();
        var states = await (await server.Client(admin).GetAsync("/api/v1/managed-services")).JsonAsync();
        var state = Assert.Single(states.EnumerateArray());
        Assert.Equal("running", state.GetProperty("state").GetString());
        Assert.Equal(0, state.GetProperty("restarts").GetInt32());
        // Its url is served by the gateway at /services/worker/.
        var echo = await TestUpstream.EchoAsync(await server.Client(admin).GetAsync("/services/worker/x"));
        Assert.Equal("/echo/x", echo.GetProperty("path").GetString());
        // The admin UI shows it too.
        using (var browser = new Browser(server.BaseAddress))
        {
            await browser.LogInAsync("admin", PortcullisServer.AdminPassword);
            var page = await (await browser.GetAsync("/admin/services")).Content.ReadAsStringAsync();
            Assert.Contains("<td data-label=\"Service\">worker</td><td data-label=\"State\">running</td>", page);
        }
        // Only admins see the managed services.
        var (_, _, userToken) = await server.CreateUserAsync();
        Assert.Equal(HttpStatusCode.Forbidden, (await server.Client(userToken).GetAsync("/api/v1/managed-services")).StatusCode);
    }

    [Fact]
    public async Task ACrashingServiceIsRestartedAfterABackoffAndTheRestartsAreCounted()
    {
        var script = Script("crash.sh", "echo starting and crashing; exit 3\n");
        await using var server = PortcullisServer.With(Provider.Sqlite, Service(0, "crasher", ("command:0", "sh"), ("command:1", script)));
        await server.InitializeAsync();
        var admin = await server.AdminTokenAsync();
        JsonElement state = default;
        // 1 s, then 2 s of backoff: the second restart comes about 3 s after the first exit, not at once.
        await WaitUntilAsync(async () =>
        {
            state = (await (await server.Client(admin).GetAsync("/api/v1/managed-services")).JsonAsync()).EnumerateArray().Single();
            return state.GetProperty("restarts").GetInt32() >= 2;
        }, "the crashing service was not restarted twice", TimeSpan.FromSeconds(15));
        // The waits double: 1 s, then 2 s (the log says so; wall-clock checks would depend on when the test began to look).
        Assert.Contains("restarting in 1 s", server.Output);
        Assert.Equal(3, state.GetProperty("last_exit_code").GetInt32());
        // Each run's output is logged; the third run's line may arrive just after its start is counted.
        await WaitUntilAsync(() => server.Output.Split('\n').Count(l => l.Contains("[crasher] starting and crashing")) >= 3,
            "the output of each run was not logged under the service's name");
        Assert.Contains("restarting in 2 s", server.Output);
    }

    [Fact]
    public async Task NoChildSurvivesPortcullisStoppingGracefullyOrByKillDashNine()
    {
        var script = Script("sleeper.py", "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n");
        var parent = Script("parent.sh", "sleep 600 &\necho \"child $!\"\nwait\n");
        foreach (var graceful in new[] { true, false })
        {
            await using var server = PortcullisServer.With(Provider.Sqlite, Service(0, "sleeper", ("command:0", "python3"), ("command:1", script)));
            await server.InitializeAsync();
            var admin = await server.AdminTokenAsync();
            var pid = 0;
            await WaitUntilAsync(async () =>
            {
                var state = (await (await server.Client(admin).GetAsync("/api/v1/managed-services")).JsonAsync()).EnumerateArray().Single();
                pid = state.GetProperty("pid").ValueKind == JsonValueKind.Number ? state.GetProperty("pid").GetInt32() : 0;
                return pid > 0;
            }, "the service did not start");
            Assert.True(Directory.Exists($"/proc/{pid}"));

            if (graceful)
            {
                // A graceful stop reaches the service's own children too (its process group).
                await using var withChild = PortcullisServer.With(Provider.Sqlite, Service(0, "parent", ("command:0", "sh"), ("command:1", parent)));
                await withChild.InitializeAsync();
                await WaitUntilAsync(() => withChild.Output.Contains("[parent] child "), "the parent service did not start its child");
                var grandchild = int.Parse(System.Text.RegularExpressions.Regex.Match(withChild.Output, @"\[parent\] child (\d+)").Groups[1].Value);
                Assert.True(IsAlive(grandchild));
                using (var stop = Process.Start("kill", ["-TERM", withChild.ProcessId.ToString()]))
                    await stop.WaitForExitAsync();
                await WaitUntilAsync(() => !IsAlive(grandchild), $"the service's child {grandchild} outlived a graceful stop", TimeSpan.FromSeconds(15));

                // SIGTERM: Portcullis stops its services (SIGTERM, then SIGKILL after 5 s) and exits by itself.
                var portcullis = server.ProcessId;
                using var term = Process.Start("kill", ["-TERM", portcullis.ToString()]);
                await term.WaitForExitAsync();
                await WaitUntilAsync(() => !IsAlive(portcullis), "Portcullis did not exit after SIGTERM", TimeSpan.FromSeconds(15));
                Assert.Contains("sleeping", server.Output);
            }
            await server.StopAsync(); // SIGKILL, when it is still running
            await WaitUntilAsync(() => !IsAlive(pid), $"the service process {pid} outlived Portcullis ({(graceful ? "SIGTERM" : "SIGKILL")})", TimeSpan.FromSeconds(10));
        }
    }

    private static bool IsAlive(int pid) =>
        File.Exists($"/proc/{pid}/stat") && File.ReadAllText($"/proc/{pid}/stat").Split(' ')[2] != "Z";

    private static Task WaitUntilAsync(Func<bool> condition, string failure, TimeSpan? timeout = null) =>
        WaitUntilAsync(() => Task.FromResult(condition()), failure, timeout);

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, string failure, TimeSpan? timeout = null)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < (timeout ?? TimeSpan.FromSeconds(15)))
        {
            if (await condition())
                return;
            await Task.Delay(50);
        }
        Assert.Fail(failure);
    }
}
