using System.Net;
using System.Net.Http.Json;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Tests.Infrastructure;
using Portcullis.Tokens;
using Portcullis.Users;
using Portcullis.Auth;

namespace Portcullis.Tests;

/// <summary>
/// docs/configuration.md: a database made by an earlier version (the first migration set) is upgraded at start, keeping its
/// data; a database a newer version has upgraded is refused, naming the versions.
/// </summary>
public sealed class MigrationTests
{
    [Fact]
    public Task SqliteDatabaseAtVersionOneIsUpgradedWithItsData()
    {
        var dir = Directory.CreateTempSubdirectory("portcullis-upgrade-").FullName;
        var options = new DbContextOptionsBuilder<PortcullisDb>()
            .UseSqlite($"Data Source={Path.Combine(dir, "portcullis.db")};Pooling=False").Options;
        return UpgradeAsync(options, Provider.Sqlite, new() { ["DataDir"] = dir });
    }

    [Fact]
    public async Task PostgresDatabaseAtVersionOneIsUpgradedWithItsData()
    {
        var cs = await PortcullisServer.CreatePostgresDatabaseAsync("pc_upgrade_");
        var options = new DbContextOptionsBuilder<PortcullisDb>().UseNpgsql(cs).Options;
        await UpgradeAsync(options, Provider.Postgres, new() { ["Database:Provider"] = "postgres", ["Database:ConnectionString"] = cs });
    }

    private static async Task UpgradeAsync(DbContextOptions<PortcullisDb> options, Provider provider, Dictionary<string, string> settings)
    {
        var provider_ = provider == Provider.Postgres ? "postgres" : "sqlite";
        Assert.True(Migrator.Scripts(provider_).Count >= 2, "the upgrade test needs at least two migrations");

        // The database as version 1 of Portcullis left it, with a user and a token in it.
        const string password = "upgrade-password-1";
        var format = new TokenFormat("pc");
        var token = format.Generate(TokenKind.Personal);
        PortcullisServer.Secrets.Add(token);
        await using (var db = new PortcullisDb(options))
        {
            Assert.Equal(1, await new Migrator(db.Database.GetDbConnection(), provider == Provider.Postgres, NullLogger<Migrator>.Instance).MigrateAsync(targetVersion: 1));
            using var hasher = new PasswordHasher(Options.Create(new AuthOptions()));
            var now = DateTime.UtcNow;
            // In SQL, as version 1 had them: today's model has columns that version 1 did not.
            var passwordHash = await hasher.HashAsync(password, CancellationToken.None);
            await db.Database.ExecuteSqlAsync(
                $"INSERT INTO users (username, normalized_username, kind, password_hash, is_admin, created_at, updated_at) VALUES ('admin', 'admin', 'user', {passwordHash}, {true}, {now}, {now})");
            var userId = await db.Database.SqlQuery<long>($"SELECT id AS \"Value\" FROM users WHERE normalized_username = 'admin'").SingleAsync();
            var (hash, hint) = (TokenFormat.Digest(token).ToHex(), format.Hint(token));
            await db.Database.ExecuteSqlAsync(
                $"INSERT INTO api_tokens (owner_id, name, token_hash, hint, scopes, created_at) VALUES ({userId}, 'old', {hash}, {hint}, 'api services', {now})");
        }

        await using var server = PortcullisServer.With(provider, settings);
        await server.InitializeAsync();
        Assert.Contains("Applying database migration 2", server.Output);
        Assert.DoesNotContain("Applying database migration 1 ", server.Output);
        Assert.DoesNotContain("Initial admin password", server.Output);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);
        var jwt = await server.LoginAsync("admin", password);
        var tokens = await (await server.Client(jwt).GetAsync("/api/v1/tokens")).JsonAsync();
        Assert.Contains(tokens.EnumerateArray(), t => t.GetProperty("name").GetString() == "old");
        var newest = Migrator.Scripts(provider_)[^1].Version;
        await using (var db = new PortcullisDb(options))
        {
            var versions = await db.Database.SqlQueryRaw<int>("SELECT version AS \"Value\" FROM schema_migrations ORDER BY version").ToListAsync();
            Assert.Equal(Migrator.Scripts(provider_).Select(m => m.Version), versions);
        }
        await server.DisposeAsync();

        // A schema newer than this Portcullis knows (a newer version ran on it): the server refuses to start and says why.
        await using (var db = new PortcullisDb(options))
        {
            var future = newest + 1;
            await db.Database.ExecuteSqlAsync($"INSERT INTO schema_migrations (version, name, applied_at) VALUES ({future}, 'from_the_future', {DateTime.UtcNow})");
        }
        await using var older = PortcullisServer.With(provider, settings);
        var refused = await Assert.ThrowsAsync<InvalidOperationException>(older.InitializeAsync);
        Assert.Contains($"The database schema is at version {newest + 1}, newer than this Portcullis knows ({newest})", refused.Message);
    }
}
