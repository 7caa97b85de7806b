using System.Data.Common;
using System.Reflection;
using System.Text.RegularExpressions;

namespace Portcullis.Data;

/// <summary>
/// Applies the versioned SQL scripts embedded from Data/Migrations (<c>NNNN_name.PROVIDER.sql</c>) that
/// the database has not seen, each in its own transaction, recording them in <c>schema_migrations</c>.
/// On PostgreSQL an advisory lock keeps instances that start together from migrating twice.
/// </summary>
internal sealed partial class Migrator(DbConnection connection, bool postgres, ILogger logger)
{
    // Any fixed number; it only has to be the same for every Portcullis instance.
    private const long AdvisoryLockKey = 0x70637573_6d696772;

    public sealed record Script(int Version, string Name, string Sql);

    public static IReadOnlyList<Script> Scripts(string provider)
    {
        var assembly = typeof(Migrator).Assembly;
        return assembly.GetManifestResourceNames()
            .Select(n => (Resource: n, Match: ScriptName().Match(n)))
            .Where(x => x.Match.Success && x.Match.Groups["provider"].Value == provider)
            .Select(x => new Script(int.Parse(x.Match.Groups["version"].Value), x.Match.Groups["name"].Value, Read(assembly, x.Resource)))
            .OrderBy(s => s.Version)
            .ToList();
    }

    /// <summary>Brings the schema up to <paramref name="targetVersion"/> (default: the newest); returns how many scripts ran.</summary>
    public async Task<int> MigrateAsync(int? targetVersion = null, CancellationToken cancellationToken = default)
    {
        var provider = postgres ? "postgres" : "sqlite";
        var opened = connection.State != System.Data.ConnectionState.Open;
        if (opened)
            await connection.OpenAsync(cancellationToken);
        try
        {
            if (postgres)
                await Sql.ExecuteAsync(connection, $"SELECT pg_advisory_lock({AdvisoryLockKey})", cancellationToken);
            else
                await Sql.ExecuteAsync(connection, "PRAGMA journal_mode=WAL", cancellationToken);

            await Sql.ExecuteAsync(connection, postgres
                ? "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
                : "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
                cancellationToken);

            var applied = new HashSet<int>();
            await using (var cmd = connection.CreateCommand())
            {
                cmd.CommandText = "SELECT version FROM schema_migrations";
                await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
                while (await reader.ReadAsync(cancellationToken))
                    applied.Add(reader.GetInt32(0));
            }

            var scripts = Scripts(provider);
            var newest = scripts.Count == 0 ? 0 : scripts[^1].Version;
            if (applied.Count > 0 && applied.Max() > newest)
            {
                throw new InvalidOperationException(
                    $"The database schema is at version {applied.Max()}, newer than this Portcullis knows ({newest}). " +
                    "Run the newer Portcullis version, or restore a backup made for this one.");
            }

            var ran = 0;
            foreach (var script in scripts.Where(s => !applied.Contains(s.Version) && s.Version <= (targetVersion ?? int.MaxValue)))
            {
                logger.LogInformation("Applying database migration {Version} ({Name})", script.Version, script.Name);
                await using var tx = await connection.BeginTransactionAsync(cancellationToken);
                await Sql.ExecuteAsync(connection, tx, script.Sql, cancellationToken);
                await Sql.ExecuteAsync(connection, tx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (@v, @n, @t)", cancellationToken,
                    ("@v", script.Version), ("@n", script.Name), ("@t", DateTime.UtcNow));
                await tx.CommitAsync(cancellationToken);
                ran++;
            }

            if (postgres)
                await Sql.ExecuteAsync(connection, $"SELECT pg_advisory_unlock({AdvisoryLockKey})", cancellationToken);
            return ran;
        }
        finally
        {
            if (opened)
                await connection.CloseAsync();
        }
    }

    private static string Read(Assembly assembly, string resource)
    {
        using var stream = assembly.GetManifestResourceStream(resource)!;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    [GeneratedRegex(@"\.(?<version>\d{4})_(?<name>[a-z0-9_]+)\.(?<provider>sqlite|postgres)\.sql$")]
    private static partial Regex ScriptName();
}
