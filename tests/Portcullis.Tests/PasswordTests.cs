using System.Net;
using Microsoft.Data.Sqlite;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>Password storage: PBKDF2-HMAC-SHA512 at OWASP strength, salted, upgraded on login.</summary>
public sealed class PasswordTests(SqliteServer server) : IClassFixture<SqliteServer>
{
    [Fact]
    public async Task PasswordsAreStoredAsSaltedPbkdf2AndRehashedWhenTheIterationCountRises()
    {
        var (username, password, _) = await server.CreateUserAsync();
        var (other, _, _) = await server.CreateUserAsync();
        var before = await HashOfAsync(username);
        Assert.StartsWith("pbkdf2-sha512$210000$", before);
        Assert.DoesNotContain(password, before);
        Assert.NotEqual(before.Split('$')[2], (await HashOfAsync(other)).Split('$')[2]); // unique salts

        await server.StopAsync();
        await server.StartAsync("--Auth:PasswordIterations=250000");
        await server.LoginAsync(username, password);
        Assert.StartsWith("pbkdf2-sha512$250000$", await HashOfAsync(username));
        // The old one is still there for a user who has not logged in since.
        Assert.StartsWith("pbkdf2-sha512$210000$", await HashOfAsync(other));
    }

    [Fact]
    public async Task IterationsBelowOwaspStrengthAreRefusedAtStart()
    {
        var (exitCode, error) = await PortcullisServer.RefusedStartAsync("--Auth:PasswordIterations=1000");
        Assert.Equal(1, exitCode);
        Assert.Contains("Auth:PasswordIterations", error);
    }

    private async Task<string> HashOfAsync(string username)
    {
        await using var connection = new SqliteConnection($"Data Source={Path.Combine(server.DataDir, "data", "portcullis.db")};Mode=ReadOnly;Pooling=False");
        await connection.OpenAsync();
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = "SELECT password_hash FROM users WHERE username = $u";
        cmd.Parameters.AddWithValue("$u", username);
        return (string)(await cmd.ExecuteScalarAsync())!;
    }
}
