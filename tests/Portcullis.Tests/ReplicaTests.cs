using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// docs/gateway.md, "Replicas": a service with several upstreams, each a real process of its own (a small Python
/// HTTP server that answers with its name, optionally slowly), load-balanced and health-checked by the gateway.
/// </summary>
public sealed class ReplicaTests(SqliteServer server) : IClassFixture<SqliteServer>
{
    private const string ReplicaScript = """
        import http.server, json, sys, time
        name, delay = sys.argv[2], float(sys.argv[3])
        class Replica(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def do_GET(self):
                if delay and self.path != "/healthz":
                    time.sleep(delay)
                body = json.dumps({"replica": name, "path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args):
                pass
        http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Replica).serve_forever()
        """;

    private sealed class Replica : IAsyncDisposable
    {
        private readonly Process _process;

        private Replica(Process process, int port, string name)
        {
            _process = process;
            Url = $"http://127.0.0.1:{port}/app";
            Name = name;
        }

        public string Url { get; }
        public string Name { get; }

        public static async Task<Replica> StartAsync(string name, double delaySeconds = 0)
        {
            var script = Path.Combine(Path.GetTempPath(), "portcullis-replica.py");
            await File.WriteAllTextAsync(script, ReplicaScript);
            var port = PortcullisServer.FreePort();
            var psi = new ProcessStartInfo("python3") { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var arg in new[] { script, port.ToString(), name, delaySeconds.ToString(System.Globalization.CultureInfo.InvariantCulture) })
                psi.ArgumentList.Add(arg);
            var process = Process.Start(psi)!;
            using var probe = new HttpClient { Timeout = TimeSpan.FromSeconds(1) };
            for (var i = 0; i < 100; i++)
            {
                try
                {
                    if ((await probe.GetAsync($"http://127.0.0.1:{port}/healthz")).IsSuccessStatusCode)
                        return new Replica(process, port, name);
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
                {
                    await Task.Delay(50);
                }
            }
            throw new TimeoutException($"replica {name} did not start: {await process.StandardError.ReadToEndAsync()}");
        }

        public void Kill()
        {
            _process.Kill();
            _process.WaitForExit();
        }

        public ValueTask DisposeAsync()
        {
            if (!_process.HasExited)
                Kill();
            _process.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    private async Task<HttpClient> RegisterAsync(string name, IEnumerable<string> upstreams, object? healthCheck = null)
    {
        using var admin = server.Client(await server.AdminTokenAsync());
        var created = await admin.PostAsJsonAsync("/api/v1/services", new { name, version = "1", upstreams, health_check = healthCheck });
        Assert.True(created.StatusCode == HttpStatusCode.Created, await created.Content.ReadAsStringAsync());
        return server.Client(await server.AdminTokenAsync());
    }

    private static async Task<Dictionary<string, int>> SpreadAsync(HttpClient client, string service, int requests, int parallel)
    {
        var counts = new Dictionary<string, int>();
        var failures = new List<string>();
        await Parallel.ForEachAsync(Enumerable.Range(0, requests), new ParallelOptions { MaxDegreeOfParallelism = parallel }, async (i, ct) =>
        {
            using var response = await client.GetAsync($"/services/{service}/x?i={i}", ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            lock (counts)
            {
                if (response.StatusCode != HttpStatusCode.OK)
                {
                    failures.Add($"{(int)response.StatusCode} {text}");
                    return;
                }
                var replica = JsonDocument.Parse(text).RootElement.GetProperty("replica").GetString()!;
                counts[replica] = counts.GetValueOrDefault(replica) + 1;
            }
        });
        Assert.True(failures.Count == 0, $"{failures.Count} requests failed: {string.Join("; ", failures.Take(3))}");
        return counts;
    }

    [Fact]
    public async Task RequestsSpreadOverEveryReplicaAndAKilledOneFailsNoRequest()
    {
        await using var a = await Replica.StartAsync("a");
        await using var b = await Replica.StartAsync("b");
        await using var c = await Replica.StartAsync("c");
        using var client = await RegisterAsync("spread", [a.Url, b.Url, c.Url]);

        var counts = await SpreadAsync(client, "spread", 90, 4);
        Assert.All(new[] { "a", "b", "c" }, r => Assert.True(counts.GetValueOrDefault(r) >= 10, $"replica {r} got {counts.GetValueOrDefault(r)} of 90"));
        // The upstream path keeps the replicas' base path.
        Assert.Equal("/app/x?i=1", JsonDocument.Parse(await client.GetStringAsync("/services/spread/x?i=1")).RootElement.GetProperty("path").GetString());

        // One dies: GETs that hit it are retried on another, and the passive check soon leaves it out.
        c.Kill();
        counts = await SpreadAsync(client, "spread", 60, 2);
        Assert.Equal(60, counts.GetValueOrDefault("a") + counts.GetValueOrDefault("b"));
        var listed = (await client.GetFromJsonAsync<JsonElement>("/api/v1/services")).EnumerateArray().Single(s => s.GetProperty("name").GetString() == "spread");
        var health = listed.GetProperty("destinations").EnumerateArray().ToDictionary(d => d.GetProperty("address").GetString()!, d => d.GetProperty("health").GetString());
        Assert.Equal("unhealthy", health[c.Url]);
        Assert.NotEqual("unhealthy", health[a.Url]);
    }

    [Fact]
    public async Task MostTrafficMovesAwayFromASlowReplica()
    {
        await using var fast1 = await Replica.StartAsync("fast1");
        await using var fast2 = await Replica.StartAsync("fast2");
        await using var slow = await Replica.StartAsync("slow", delaySeconds: 0.3);
        using var client = await RegisterAsync("slowpoke", [fast1.Url, fast2.Url, slow.Url]);
        var counts = await SpreadAsync(client, "slowpoke", 120, 12);
        Assert.True(counts.GetValueOrDefault("slow") < 120 / 6, $"the slow replica took {counts.GetValueOrDefault("slow")} of 120 requests");
    }

    [Fact]
    public async Task WhenNoReplicaIsHealthyTheAnswerIs503WithRetryAfter()
    {
        using var client = await RegisterAsync("gone", ["http://127.0.0.1:9/app", "http://127.0.0.1:1/app"]);
        HttpResponseMessage? last = null;
        for (var i = 0; i < 20; i++)
        {
            last?.Dispose();
            last = await client.GetAsync("/services/gone/x");
            Assert.True(last.StatusCode is HttpStatusCode.BadGateway or HttpStatusCode.ServiceUnavailable, $"{(int)last.StatusCode}");
            if (last.StatusCode == HttpStatusCode.ServiceUnavailable)
                break;
        }
        Assert.Equal(HttpStatusCode.ServiceUnavailable, last!.StatusCode);
        Assert.NotNull(last.Headers.RetryAfter);
        Assert.Contains("No replica", await last.Content.ReadAsStringAsync());
        last.Dispose();
    }

    [Fact]
    public async Task AnActiveHealthCheckTakesAFailingReplicaOut()
    {
        await using var up = await Replica.StartAsync("up");
        using var client = await RegisterAsync("probed", [up.Url, "http://127.0.0.1:9/app"], new { path = "/healthz", interval_seconds = 1 });
        var deadline = DateTime.UtcNow.AddSeconds(15);
        string? health = null;
        while (DateTime.UtcNow < deadline)
        {
            var listed = (await client.GetFromJsonAsync<JsonElement>("/api/v1/services")).EnumerateArray().Single(s => s.GetProperty("name").GetString() == "probed");
            health = listed.GetProperty("destinations").EnumerateArray().Last().GetProperty("health").GetString();
            if (health == "unhealthy")
                break;
            await Task.Delay(200);
        }
        Assert.Equal("unhealthy", health);
        var counts = await SpreadAsync(client, "probed", 20, 2);
        Assert.Equal(20, counts.GetValueOrDefault("up"));
    }
}
