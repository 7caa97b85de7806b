using System.Diagnostics;
using System.Net;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// examples/IdleTokenReaper, written with the client library: it revokes tokens unused for longer than
/// --timeout and leaves the others, run standalone and as a managed service.
/// </summary>
public sealed class ReaperTests
{
    private static readonly string Reaper = Path.Combine(AppContext.BaseDirectory, "IdleTokenReaper.dll");

    private static async Task<(string Idle, string Used)> IdleAndUsedTokensAsync(PortcullisServer server)
    {
        var (_, _, owner) = await server.CreateUserAsync();
        var idle = await server.CreateTokenAsync(owner, new { name = "idle-" + Guid.NewGuid().ToString("N")[..6] });
        var used = await server.CreateTokenAsync(owner, new { name = "used-" + Guid.NewGuid().ToString("N")[..6] });
        // Past the 2 s timeout for 'idle'; 'used' keeps being used (last use is written behind every 0.2 s here).
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(3))
        {
            Assert.Equal(HttpStatusCode.OK, (await server.Client(used).GetAsync("/api/v1/me")).StatusCode);
            await Task.Delay(250);
        }
        await Task.Delay(500);
        return (idle, used);
    }

    [Fact]
    public async Task StandaloneTheReaperRevokesAnIdleTokenAndLeavesAUsedOne()
    {
        await using var server = new SqliteServer();
        await server.InitializeAsync();
        var admin = await server.AdminTokenAsync();
        var (idle, used) = await IdleAndUsedTokensAsync(server);
        // 'used' stays in use all along, however long the reaper takes to start on a loaded machine.
        using var busy = new CancellationTokenSource();
        var keepBusy = KeepUsingAsync(server, used, busy.Token);

        var dry = await RunAsync(server, admin, "--once", "--timeout", "2s", "--dry-run");
        Assert.Equal(0, dry.ExitCode);
        Assert.Contains("would revoke " + idle[..8], dry.Output);
        Assert.DoesNotContain(used[..8], dry.Output);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(idle).GetAsync("/api/v1/me")).StatusCode);

        // That check used 'idle': wait past the timeout again.
        await Task.Delay(TimeSpan.FromSeconds(3.5));
        var run = await RunAsync(server, admin, "--once", "--timeout", "2s");
        Assert.Equal(0, run.ExitCode);
        Assert.Contains("revoking " + idle[..8], run.Output);
        Assert.DoesNotContain(used[..8], run.Output);
        await busy.CancelAsync();
        await keepBusy;
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(idle).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(used).GetAsync("/api/v1/me")).StatusCode);
        // The credential it ran with is never its own victim.
        Assert.Equal(HttpStatusCode.OK, (await server.Client(admin).GetAsync("/api/v1/me")).StatusCode);

        var usage = await RunAsync(server, admin, "--timeout", "soon");
        Assert.Equal(2, usage.ExitCode);
    }

    [Fact]
    public async Task AsAManagedServiceTheReaperRunsWithItsOwnTokenAndRevokesIdleTokens()
    {
        await using var server = PortcullisServer.With(Provider.Sqlite, new()
        {
            ["Services:0:name"] = "idle-reaper", ["Services:0:admin"] = "true",
            ["Services:0:command:0"] = "dotnet", ["Services:0:command:1"] = Reaper,
            ["Services:0:command:2"] = "--timeout", ["Services:0:command:3"] = "2s", ["Services:0:command:4"] = "--interval", ["Services:0:command:5"] = "1s",
        });
        await server.InitializeAsync();
        var (idle, used) = await IdleAndUsedTokensAsync(server);
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(10) && (await server.Client(idle).GetAsync("/api/v1/me")).StatusCode == HttpStatusCode.OK)
        {
            await server.Client(used).GetAsync("/api/v1/me");
            await Task.Delay(200);
        }
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(idle).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(used).GetAsync("/api/v1/me")).StatusCode);
        Assert.Contains("[idle-reaper] revoking " + idle[..8], server.Output);
    }

    private static async Task KeepUsingAsync(PortcullisServer server, string token, CancellationToken stop)
    {
        using var client = server.Client(token);
        while (!stop.IsCancellationRequested)
        {
            Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/v1/me", CancellationToken.None)).StatusCode);
            await Task.Delay(250, CancellationToken.None);
        }
    }

    private static async Task<(int ExitCode, string Output)> RunAsync(PortcullisServer server, string token, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Reaper);
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        psi.Environment["PORTCULLIS_URL"] = server.BaseAddress.ToString();
        psi.Environment["PORTCULLIS_API_TOKEN"] = token;
        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await output + await error);
    }
}
