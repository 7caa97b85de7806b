using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>docs/configuration.md: the <c>serve</c> command, its start-up rules and its health endpoints.</summary>
public sealed class ServeTests(SqliteServer server) : IClassFixture<SqliteServer>
{
    [Fact]
    public async Task HealthReadinessMetricsOpenApiAndJwksAnswer()
    {
        using var client = server.Client();
        Assert.Equal("ok", await client.GetStringAsync("/healthz"));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/readyz")).StatusCode);
        Assert.Contains("portcullis_http_requests_total", await client.GetStringAsync("/metrics"));
        var openApi = JsonDocument.Parse(await client.GetStringAsync("/openapi/v1.json")).RootElement;
        Assert.True(openApi.GetProperty("paths").TryGetProperty("/api/v1/tokens", out _));
        var jwks = JsonDocument.Parse(await client.GetStringAsync("/.well-known/jwks.json")).RootElement.GetProperty("keys")[0];
        Assert.Equal("EC", jwks.GetProperty("kty").GetString());
        Assert.Equal("ES256", jwks.GetProperty("alg").GetString());
        Assert.False(jwks.TryGetProperty("d", out _));
    }

    [Fact]
    public async Task ASecondServerOnTheSameDataDirectoryRefusesToStart()
    {
        var (exitCode, output) = await RunServeAsync(["--data-dir", Path.Combine(server.DataDir, "data")]);
        Assert.Equal(1, exitCode);
        Assert.Contains("Another Portcullis server is already using the data directory", output);
    }

    [Fact]
    public async Task BadConfigurationStopsStartUpNamingTheKey()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var (exitCode, output) = await RunServeAsync(["--data-dir", dir, "--Tokens:Prefix=PC1", "--Database:Provider=mysql"]);
        Assert.Equal(1, exitCode);
        Assert.Contains("Tokens:Prefix", output);
        Assert.Contains("Database:Provider", output);
        Assert.DoesNotContain("   at ", output);
    }

    [Fact]
    public async Task FirstStartPrintsAGeneratedAdminPasswordOnceAndItWorks()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var port = PortcullisServer.FreePort();
        var (_, first) = await RunServeAsync(["--data-dir", dir, "--urls", $"http://127.0.0.1:{port}"], adminPassword: null, stopAfterReady: port);
        var line = first.Split('\n').Single(l => l.StartsWith("Initial admin password (shown once): ", StringComparison.Ordinal));
        var password = line["Initial admin password (shown once): ".Length..].Trim();
        PortcullisServer.Secrets.Add(password);
        Assert.True(password.Length >= 20);

        var (_, second) = await RunServeAsync(["--data-dir", dir, "--urls", $"http://127.0.0.1:{port}"], adminPassword: null, stopAfterReady: port,
            whileRunning: async client =>
            {
                using var login = await client.PostAsync("/auth/token", new StringContent(
                    JsonSerializer.Serialize(new { username = "admin", password }), System.Text.Encoding.UTF8, "application/json"));
                Assert.Equal(HttpStatusCode.Created, login.StatusCode);
                PortcullisServer.Secrets.Add((await login.JsonAsync()).GetProperty("access_token").GetString()!);
            });
        Assert.DoesNotContain("Initial admin password", second);
        Assert.DoesNotContain("Applying database migration", second); // the schema is already current
    }

    [Fact]
    public async Task DataSurvivesARestart()
    {
        var token = await server.CreateTokenAsync(await server.AdminTokenAsync(), new { name = "survivor" });
        await server.StopAsync();
        await server.StartAsync();
        Assert.Equal(HttpStatusCode.OK, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);
    }

    private static async Task<(int ExitCode, string Output)> RunServeAsync(
        string[] args, string? adminPassword = PortcullisServer.AdminPassword, int? stopAfterReady = null, Func<HttpClient, Task>? whileRunning = null)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "portcullis.dll"));
        psi.ArgumentList.Add("serve");
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        psi.Environment.Remove("PORTCULLIS_ADMIN_PASSWORD");
        if (adminPassword is not null)
            psi.Environment["PORTCULLIS_ADMIN_PASSWORD"] = adminPassword;
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (stopAfterReady is { } port)
        {
            using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (DateTime.UtcNow < deadline && !process.HasExited)
            {
                try
                {
                    if ((await client.GetAsync("/readyz")).IsSuccessStatusCode)
                        break;
                }
                catch (HttpRequestException)
                {
                }
                await Task.Delay(50);
            }
            if (whileRunning is not null)
                await whileRunning(client);
            process.Kill(entireProcessTree: true);
        }
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout + await stderr);
    }
}
