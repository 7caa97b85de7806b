using System.IO.Compression;
using System.Net;
using System.Net.Http.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// docs/operations.md, "Backups" and "Moving to PostgreSQL": <c>portcullis backup</c> while the server runs, <c>restore</c>
/// into another data directory, <c>migrate-database</c> from SQLite to PostgreSQL and back; after each, every credential
/// made before answers as it did.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class DatabaseCopyTests
{
    /// <summary>What an installation holds that must survive a copy, and how to check each of them.</summary>
    private sealed record Installation(string Username, string Password, string ApiToken, string Jwt, OAuthHelpers.ClientCredentials Client, string PublicUrl)
    {
        public static async Task<Installation> MakeAsync(PortcullisServer server)
        {
            var (username, password, apiToken) = await server.CreateUserAsync();
            var admin = await server.AdminTokenAsync();
            var client = await server.CreateClientAsync(admin, ["api"]);
            // Used, so that usage and the audit log have rows; a JWT, signed with a stored (sealed) key.
            Assert.Equal(HttpStatusCode.OK, (await server.Client(apiToken).GetAsync("/api/v1/me")).StatusCode);
            var jwt = await server.LoginAsync(username, password);
            // Written behind the request: wait until the token's use is in the database, so that the copy carries it.
            using (var asUser = server.Client(apiToken))
            {
                for (var i = 0; i < 50 && !(await (await asUser.GetAsync("/api/v1/tokens")).JsonAsync()).EnumerateArray()
                         .Any(t => t.GetProperty("last_used_at").ValueKind != System.Text.Json.JsonValueKind.Null); i++)
                    await Task.Delay(100);
            }
            using (var asAdmin = server.Client(admin))
            {
                using var hook = await asAdmin.PostAsJsonAsync("/api/v1/webhooks", new { url = "https://hooks.example.com/portcullis", events = new[] { "token.revoked" } });
                Assert.Equal(HttpStatusCode.Created, hook.StatusCode);
            }
            return new Installation(username, password, apiToken, jwt, client, server.BaseAddress.ToString().TrimEnd('/'));
        }

        /// <summary>The token, the password, the client secret and the JWT issued before the copy all work on <paramref name="server"/>.</summary>
        public async Task AssertWorksOnAsync(PortcullisServer server)
        {
            using (var asToken = server.Client(ApiToken))
                Assert.Equal(Username, (await (await asToken.GetAsync("/api/v1/me")).JsonAsync()).GetProperty("username").GetString());
            using (var asJwt = server.Client(Jwt))
                Assert.Equal(HttpStatusCode.OK, (await asJwt.GetAsync("/api/v1/me")).StatusCode);
            Assert.NotEmpty(await server.LoginAsync(Username, Password));
            using var issued = await server.ClientCredentialsAsync(Client);
            Assert.Equal(HttpStatusCode.OK, issued.StatusCode);
            using var asUser = server.Client(ApiToken);
            var tokens = await (await asUser.GetAsync("/api/v1/tokens")).JsonAsync();
            Assert.Contains(tokens.EnumerateArray(), t => t.GetProperty("last_used_at").ValueKind != System.Text.Json.JsonValueKind.Null);
        }
    }

    private static string KeyFileOf(PortcullisServer server) => Path.Combine(server.DataDir, "data", "encryption.key");

    /// <summary>A server (not started) on a data directory of its own, with the first one's key-encryption key and public URL.</summary>
    private static PortcullisServer Beside(PortcullisServer first, Dictionary<string, string>? settings = null)
    {
        var dir = Directory.CreateTempSubdirectory("portcullis-copy-").FullName;
        var all = new Dictionary<string, string>
        {
            ["DataDir"] = dir, ["Keys:EncryptionKeyFile"] = KeyFileOf(first), ["PublicUrl"] = first.BaseAddress.ToString().TrimEnd('/'),
        };
        foreach (var (key, value) in settings ?? [])
            all[key] = value;
        return PortcullisServer.With(settings?.ContainsKey("Database:Provider") == true ? Provider.Postgres : Provider.Sqlite, all);
    }

    [Fact]
    public async Task ABackupTakenWhileTheServerRunsRestoresEveryCredentialElsewhere()
    {
        await using var original = new SqliteServer();
        await original.InitializeAsync();
        var installation = await Installation.MakeAsync(original);
        var file = Path.Combine(Directory.CreateTempSubdirectory("portcullis-backup-").FullName, "portcullis.backup");

        var backup = await original.RunCommandAsync("", "backup", file);
        Assert.True(backup.ExitCode == 0, backup.Err);
        Assert.Matches(@"Backed up 19 tables \(\d+ rows, schema version \d+\)", backup.Out);
        Assert.Contains("key-encryption key", backup.Out);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        var again = await original.RunCommandAsync("", "backup", file);
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("exists already", again.Err);

        await using var restored = Beside(original);
        var restore = await restored.RunCommandAsync("", "restore", file);
        Assert.True(restore.ExitCode == 0, restore.Err);
        Assert.Contains("Restored 19 tables", restore.Out);
        await restored.InitializeAsync();
        Assert.DoesNotContain("Initial admin password", restored.Output);
        await installation.AssertWorksOnAsync(restored);

        // Not while a server holds the data directory; not over data without --force; then with it.
        var whileRunning = await restored.RunCommandAsync("", "restore", file);
        Assert.Equal(1, whileRunning.ExitCode);
        Assert.Contains("Another Portcullis server is already using the data directory", whileRunning.Err);
        await restored.StopAsync();
        var overData = await restored.RunCommandAsync("", "restore", file);
        Assert.Equal(1, overData.ExitCode);
        Assert.Contains("not empty", overData.Err);
        var forced = await restored.RunCommandAsync("", "restore", file, "--force");
        Assert.True(forced.ExitCode == 0, forced.Err);
        await restored.StartAsync();
        await installation.AssertWorksOnAsync(restored);
    }

    [Fact]
    public async Task ACutOrForeignFileRestoresNothing()
    {
        await using var original = new SqliteServer();
        await original.InitializeAsync();
        await Installation.MakeAsync(original);
        var dir = Directory.CreateTempSubdirectory("portcullis-backup-").FullName;
        var file = Path.Combine(dir, "portcullis.backup");
        Assert.Equal(0, (await original.RunCommandAsync("", "backup", file)).ExitCode);

        // The same backup without its last lines, as a copy cut short would be.
        var lines = new List<string>();
        using (var reader = new StreamReader(new GZipStream(File.OpenRead(file), CompressionMode.Decompress)))
            while (await reader.ReadLineAsync() is { } line)
                lines.Add(line);
        var cut = Path.Combine(dir, "cut.backup");
        await using (var writer = new StreamWriter(new GZipStream(File.Create(cut), CompressionLevel.Fastest)))
            foreach (var line in lines.Take(lines.Count - 3))
                await writer.WriteLineAsync(line);
        await using var target = Beside(original);
        var restore = await target.RunCommandAsync("", "restore", cut);
        Assert.Equal(1, restore.ExitCode);
        Assert.Contains("cut short", restore.Err);

        var foreign = Path.Combine(dir, "foreign.backup");
        await using (var writer = new StreamWriter(new GZipStream(File.Create(foreign), CompressionLevel.Fastest)))
            await writer.WriteLineAsync("{\"format\":\"something-else\"}");
        Assert.Contains("is not a Portcullis backup", (await target.RunCommandAsync("", "restore", foreign)).Err);

        // Nothing was left behind: the good backup goes in without --force.
        var good = await target.RunCommandAsync("", "restore", file);
        Assert.True(good.ExitCode == 0, good.Err);
    }

    [Fact]
    public async Task ARichSqliteInstallationMovesToPostgresServesFromTwoInstancesAndMovesBack()
    {
        await using var original = new SqliteServer();
        await original.InitializeAsync();
        var installation = await Installation.MakeAsync(original);
        await original.StopAsync();

        var cs = await PortcullisServer.CreatePostgresDatabaseAsync("pc_moved_");
        var move = await original.RunCommandAsync("", "migrate-database", "--to", cs);
        Assert.True(move.ExitCode == 0, move.Err);
        Assert.Contains("api_tokens", move.Out);
        Assert.Equal(19, move.Out.Split('\n').Count(l => l.Contains("same on both sides")));
        Assert.Contains("Point every server at", move.Out);

        var postgres = new Dictionary<string, string> { ["Database:Provider"] = "postgres", ["Database:ConnectionString"] = cs };
        await using var first = Beside(original, postgres);
        await first.InitializeAsync();
        await installation.AssertWorksOnAsync(first);
        await using var second = Beside(original, postgres);
        await second.InitializeAsync();
        await installation.AssertWorksOnAsync(second);

        // The same copy again finds the database taken.
        var twice = await original.RunCommandAsync("", "migrate-database", "--to", cs);
        Assert.Equal(1, twice.ExitCode);
        Assert.Contains("not empty", twice.Err);

        // And back to SQLite, from the PostgreSQL configuration, while the instances run.
        await using var back = Beside(original);
        var backFile = Path.Combine(back.Setting("DataDir")!, "portcullis.db");
        var moveBack = await first.RunCommandAsync("", "migrate-database", "--to", "sqlite:" + backFile);
        Assert.True(moveBack.ExitCode == 0, moveBack.Err);
        await back.InitializeAsync();
        await installation.AssertWorksOnAsync(back);
    }
}
