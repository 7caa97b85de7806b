using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>A server that writes token usage only every ten minutes: what it holds at a stop is written by the stop alone.</summary>
public sealed class RareUsageFlushServer() : PortcullisServer(Provider.Sqlite, new() { ["Tokens:UsageFlushInterval"] = "00:10:00" });

/// <summary>
/// deploy/portcullis.service, the unit docs/operations.md installs: systemd's own checker finds nothing wrong with it and
/// rates its exposure low, and the stop it sends (SIGTERM) ends the server cleanly within the unit's TimeoutStopSec.
/// </summary>
public sealed partial class SystemdTests(RareUsageFlushServer server) : IClassFixture<RareUsageFlushServer>
{
    private static string Unit => Path.Combine(ClusterTests.RepositoryRoot(), "deploy", "portcullis.service");

    /// <summary>The unit with its program path pointed at one that exists here (systemd checks that it does).</summary>
    private static string UnitToCheck()
    {
        var dir = Directory.CreateTempSubdirectory("portcullis-unit-").FullName;
        var path = Path.Combine(dir, "portcullis.service");
        File.WriteAllText(path, File.ReadAllText(Unit).Replace("/usr/local/bin/portcullis", "/bin/true", StringComparison.Ordinal));
        return path;
    }

    private static Task<(int ExitCode, string Output, string Error)> SystemdAnalyzeAsync(params string[] args) =>
        ExternalTool.RunAsync("systemd-analyze", args, "systemd-analyze checks the unit; ./test.sh installs Debian's systemd.", TimeSpan.FromMinutes(1));

    [Fact]
    public async Task TheUnitIsValidAndItsExposureIsLow()
    {
        var unit = UnitToCheck();
        var (exitCode, output, error) = await SystemdAnalyzeAsync("verify", "--man=no", unit);
        Assert.True(exitCode == 0 && error.Trim().Length == 0 && output.Trim().Length == 0, $"systemd-analyze verify:\n{output}\n{error}");

        (exitCode, output, error) = await SystemdAnalyzeAsync("security", "--offline=true", "--no-pager", unit);
        var exposure = ExposureLine().Match(output);
        Assert.True(exposure.Success, $"systemd-analyze security:\n{output}\n{error}");
        // systemd's scale: 0 (fully locked down) to 10; below 2 it calls the unit "OK".
        Assert.True(double.Parse(exposure.Groups[1].Value, CultureInfo.InvariantCulture) < 2.0, exposure.Value);
        Directory.Delete(Path.GetDirectoryName(unit)!, recursive: true);
    }

    [Fact]
    public async Task SigtermEndsTheServerCleanlyWithinTheUnitsTimeoutAndWritesWhatItHeld()
    {
        var timeout = TimeSpan.FromSeconds(int.Parse(TimeoutStopSec().Match(File.ReadAllText(Unit)).Groups[1].Value, CultureInfo.InvariantCulture));
        var admin = await server.AdminTokenAsync();
        var name = "used-before-stop-" + Guid.NewGuid().ToString("N")[..6];
        var token = await server.CreateTokenAsync(admin, new { name });
        Assert.Equal(HttpStatusCode.OK, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);

        var stopwatch = Stopwatch.StartNew();
        using (var kill = Process.Start("kill", ["-TERM", server.ProcessId.ToString(CultureInfo.InvariantCulture)]))
            await kill.WaitForExitAsync();
        var exitCode = await server.WaitForExitAsync(timeout);
        Assert.True(exitCode == 0, $"exit code {exitCode} after SIGTERM:\n{server.Output}");
        Assert.True(stopwatch.Elapsed < timeout, $"took {stopwatch.Elapsed} (TimeoutStopSec is {timeout})");

        await server.StartAsync();
        using var client = server.Client(await server.AdminTokenAsync());
        var tokens = await (await client.GetAsync("/api/v1/tokens")).JsonAsync();
        var used = tokens.EnumerateArray().Single(t => t.GetProperty("name").GetString() == name);
        Assert.NotEqual(System.Text.Json.JsonValueKind.Null, used.GetProperty("last_used_at").ValueKind);
    }

    [GeneratedRegex(@"Overall exposure level for portcullis\.service: ([0-9.]+)")]
    private static partial Regex ExposureLine();

    [GeneratedRegex(@"(?m)^TimeoutStopSec=(\d+)$")]
    private static partial Regex TimeoutStopSec();
}
