using System.Net;
using System.Net.Http.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// Recovering a locked-out installation on its own machine (docs/operations.md, "I lost the admin password"):
/// <c>portcullis admin reset-password</c> and <c>admin create</c>, as processes, on SQLite and on PostgreSQL.
/// </summary>
public sealed class AdminRecoveryTests
{
    private const string NewPassword = "recovered-password-2026";

    private static async Task<HttpStatusCode> LogInAsync(PortcullisServer server, string username, string password)
    {
        using var client = server.Client();
        using var response = await client.PostAsync("/auth/token", new FormUrlEncodedContent(
            [new("grant_type", "password"), new("username", username), new("password", password)]));
        return response.StatusCode;
    }

    [Fact]
    public async Task OnSqliteTheCommandsWaitForTheServerToStopThenLetTheOperatorBackIn()
    {
        await using var server = new SqliteServer();
        await server.InitializeAsync();
        PortcullisServer.Secrets.Add(NewPassword);

        // The server holds the data directory: nothing is written under it.
        var refused = await server.RunCommandAsync(NewPassword + "\n", "admin", "reset-password", "admin", "--password-stdin");
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("already using the data directory", refused.Err);
        await server.StopAsync();

        var reset = await server.RunCommandAsync(NewPassword + "\n", "admin", "reset-password", "admin", "--password-stdin");
        Assert.True(reset.ExitCode == 0, reset.Err);
        Assert.Contains("Set a new password for admin", reset.Out);
        var created = await server.RunCommandAsync(NewPassword + "\n", "admin", "create", "rescuer", "--admin", "--password-stdin");
        Assert.True(created.ExitCode == 0, created.Err);
        var exists = await server.RunCommandAsync(NewPassword + "\n", "admin", "create", "rescuer", "--password-stdin");
        Assert.Equal(1, exists.ExitCode);
        Assert.Contains("exists already", exists.Err);
        var weak = await server.RunCommandAsync("short\n", "admin", "reset-password", "admin", "--password-stdin");
        Assert.Equal(2, weak.ExitCode);
        Assert.DoesNotContain(NewPassword, reset.Out + reset.Err + created.Out + created.Err);

        await server.StartAsync();
        Assert.Equal(HttpStatusCode.BadRequest, await LogInAsync(server, "admin", PortcullisServer.AdminPassword));
        Assert.Equal(HttpStatusCode.OK, await LogInAsync(server, "admin", NewPassword));
        var rescuer = await server.LoginAsync("rescuer", NewPassword);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(rescuer).GetAsync("/api/v1/users")).StatusCode);
        var audit = await (await server.Client(rescuer).GetAsync("/api/v1/audit?limit=50")).JsonAsync();
        Assert.Contains(audit.GetProperty("events").EnumerateArray(), e =>
            e.GetProperty("event").GetString() == "user.password_changed" && e.GetProperty("actor").GetString()!.EndsWith("(command line)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task OnPostgresTheResetWorksWhileTheServerRunsAndEndsTheUsersAccessTokensAtOnce()
    {
        await using var server = new PostgresServer();
        await server.InitializeAsync();
        PortcullisServer.Secrets.Add(NewPassword);
        var (username, password, _) = await server.CreateUserAsync();
        var jwt = await server.LoginAsync(username, password);
        using var asUser = server.Client(jwt);
        Assert.Equal(HttpStatusCode.OK, (await asUser.GetAsync("/api/v1/me")).StatusCode);

        var reset = await server.RunCommandAsync(NewPassword + "\n", "admin", "reset-password", username, "--password-stdin");
        Assert.True(reset.ExitCode == 0, reset.Err);
        var since = System.Diagnostics.Stopwatch.StartNew();
        while ((await asUser.GetAsync("/api/v1/me")).StatusCode != HttpStatusCode.Unauthorized)
        {
            Assert.True(since.Elapsed < TimeSpan.FromSeconds(1), "the running server still accepted the user's access token after the reset");
            await Task.Delay(20);
        }
        Assert.Equal(HttpStatusCode.OK, await LogInAsync(server, username, NewPassword));
        Assert.Equal(HttpStatusCode.BadRequest, await LogInAsync(server, username, password));
    }
}
