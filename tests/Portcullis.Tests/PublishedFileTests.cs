using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// The single file that deploy/release.sh makes for this machine (docs/operations.md, "Installing the single file"):
/// the one given in <c>PORTCULLIS_PUBLISHED_FILE</c> (./test.sh builds it before the tests), or built here once.
/// </summary>
public static class PublishedFile
{
    private static readonly Lazy<string> Built = new(Build);

    public static string Path => Built.Value;

    /// <summary>
    /// Starts <see cref="Path"/> as a machine without .NET would: nothing on the PATH (so no <c>dotnet</c>), no
    /// <c>DOTNET_ROOT</c>, and a home directory of its own, where the file extracts SQLite's native library.
    /// </summary>
    public static ProcessStartInfo Start(string home)
    {
        var psi = new ProcessStartInfo(Path) { UseShellExecute = false };
        foreach (var name in psi.Environment.Keys.Where(k => k.StartsWith("DOTNET_", StringComparison.Ordinal) || k == "MSBuildExtensionsPath").ToList())
            psi.Environment.Remove(name);
        psi.Environment["PATH"] = Directory.CreateDirectory(System.IO.Path.Combine(home, "empty-bin")).FullName;
        psi.Environment["HOME"] = home;
        return psi;
    }

    private static string Build()
    {
        if (Environment.GetEnvironmentVariable("PORTCULLIS_PUBLISHED_FILE") is { Length: > 0 } given)
            return File.Exists(given) ? given : throw new FileNotFoundException($"PORTCULLIS_PUBLISHED_FILE names '{given}', which does not exist.");
        var rid = RuntimeInformation.OSArchitecture == Architecture.Arm64 ? "linux-arm64" : "linux-x64";
        var dist = Directory.CreateTempSubdirectory("portcullis-dist-").FullName;
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { System.IO.Path.Combine(ClusterTests.RepositoryRoot(), "deploy", "release.sh"), "--no-ready-to-run", rid })
            psi.ArgumentList.Add(a);
        psi.Environment["DIST_DIR"] = dist;
        using var process = Process.Start(psi)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"deploy/release.sh failed ({process.ExitCode}):\n{output.Result}\n{error}");
        return Directory.GetFiles(dist, $"portcullis-*-{rid}").Single();
    }
}

/// <summary>A server run from the published file, on SQLite in its own data directory.</summary>
public sealed class PublishedFileServer() : PortcullisServer(Provider.Sqlite)
{
    public string Home { get; } = Directory.CreateTempSubdirectory("portcullis-home-").FullName;

    protected override ProcessStartInfo Program() => PublishedFile.Start(Home);
}

public sealed class PublishedFileTests(PublishedFileServer server) : IClassFixture<PublishedFileServer>
{
    [Fact]
    public async Task TheServerRunsFromTheFileAloneWithItsWebUi()
    {
        // The process is the file itself, with no part of an installed .NET mapped into it.
        var pid = server.ProcessId;
        Assert.Equal(Path.GetFullPath(PublishedFile.Path), Path.GetFullPath(new FileInfo($"/proc/{pid}/exe").LinkTarget!));
        var maps = await File.ReadAllTextAsync($"/proc/{pid}/maps");
        Assert.DoesNotContain("/usr/share/dotnet", maps);
        Assert.DoesNotContain("/usr/lib/dotnet", maps);
        // SQLite's native library came out of the file, into the home directory it was given.
        Assert.Contains(Path.Combine(server.Home, ".net"), maps);
        Assert.Contains("libe_sqlite3.so", maps);

        using var client = server.Client();
        using var login = await client.GetAsync("/login");
        Assert.Equal(HttpStatusCode.OK, login.StatusCode);
        Assert.Contains("/static/portcullis.css", await login.Content.ReadAsStringAsync());
        using var css = await client.GetAsync("/static/portcullis.css");
        Assert.Equal(HttpStatusCode.OK, css.StatusCode);
        Assert.Equal("text/css", css.Content.Headers.ContentType?.MediaType);
        using var openapi = await client.GetAsync("/openapi/v1.json");
        Assert.Equal(HttpStatusCode.OK, openapi.StatusCode);
    }

    [Fact]
    public async Task TheSameFileIsTheCli()
    {
        var config = Directory.CreateTempSubdirectory("portcullis-cli-").FullName;
        var login = await RunAsync(config, PortcullisServer.AdminPassword + "\n", "login", "--host", server.BaseAddress.ToString().TrimEnd('/'), "--username", "admin", "--password-stdin");
        Assert.True(login.ExitCode == 0, login.Err);
        Assert.Contains("Logged in to", login.Out + login.Err);

        var created = await RunAsync(config, null, "token", "create", "from-the-single-file", "--scope", "api", "--json");
        Assert.True(created.ExitCode == 0, created.Err);
        var token = JsonDocument.Parse(created.Out).RootElement.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        using var me = await server.Client(token).GetAsync("/api/v1/me");
        Assert.Equal(HttpStatusCode.OK, me.StatusCode);
        Assert.Equal("admin", (await me.JsonAsync()).GetProperty("username").GetString());

        var whoami = await RunAsync(config, null, "whoami");
        Assert.True(whoami.ExitCode == 0, whoami.Err);
        Assert.Contains("admin", whoami.Out);
    }

    [Fact]
    public async Task TheChecksumsBesideTheFileMatchIt()
    {
        var sums = Path.Combine(Path.GetDirectoryName(PublishedFile.Path)!, "SHA256SUMS");
        var line = (await File.ReadAllLinesAsync(sums)).Single(l => l.EndsWith("  " + Path.GetFileName(PublishedFile.Path), StringComparison.Ordinal));
        await using var file = File.OpenRead(PublishedFile.Path);
        Assert.Equal(line[..64], Convert.ToHexStringLower(await SHA256.HashDataAsync(file)));
    }

    private Task<CliRun.Result> RunAsync(string config, string? stdin, params string[] args)
    {
        var psi = PublishedFile.Start(server.Home);
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        psi.Environment["PORTCULLIS_CONFIG_DIR"] = config;
        psi.Environment["NO_COLOR"] = "1";
        return CliRun.RunAsync(psi, stdin);
    }
}
