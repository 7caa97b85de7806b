using System.CommandLine;
using System.Data;
using System.Data.Common;
using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using Npgsql;
using Portcullis.Data;
using Portcullis.Security;

namespace Portcullis.Cli;

/// <summary>
/// <c>backup</c>, <c>restore</c> and <c>migrate-database</c> (docs/operations.md): copies of Portcullis's whole database in
/// the neutral form of <see cref="LogicalCopy"/>, in a file or straight into another database, each table counted and
/// digested on both sides.
/// </summary>
internal static class DatabaseCommands
{
    public static IEnumerable<Command> All()
    {
        yield return Backup();
        yield return Restore();
        yield return MigrateDatabase();
    }

    private static Command Backup()
    {
        var file = new Argument<string>("FILE") { Description = "Where to write the backup; it must not exist yet." };
        var (dataDir, config) = (ServerSide.DataDirOption(), ServerSide.ConfigOption());
        var command = new Command("backup",
            "Write a consistent copy of the database to FILE while the server runs (docs/operations.md).\n\n" +
            "Example:\n  portcullis backup /var/backups/portcullis-$(date +%F).backup --data-dir /var/lib/portcullis") { file, dataDir, config };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction((parse, cancellationToken) => ServerSide.RunAsync(parse, dataDir, config, ServerSide.Access.Shared, cancellationToken, async (target, ct) =>
        {
            var path = Path.GetFullPath(parse.GetValue(file)!);
            if (File.Exists(path))
                throw new CliException($"'{path}' exists already. Choose another name; a backup never overwrites a file.");
            var postgres = target.Database.IsPostgres;
            await using var connection = ServerSide.OpenConnection(target, ServerSide.Access.Shared);
            await connection.OpenAsync(ct);
            var schema = await SchemaVersionAsync(connection, ct);
            var newest = Migrator.Scripts(postgres ? "postgres" : "sqlite")[^1].Version;
            if (schema != newest)
                throw new CliException($"The database's schema is at version {schema}; this Portcullis knows version {newest}. Back up with the Portcullis version that runs the server.");
            // One snapshot for every table: what the server writes meanwhile is either wholly in the backup or not at all.
            await using var tx = await connection.BeginTransactionAsync(postgres ? IsolationLevel.RepeatableRead : IsolationLevel.Serializable, ct);
            var tables = LogicalCopy.Shapes(ModelOf(postgres));
            var sealedWith = await SealedWithAsync(connection, tx, ct);
            var partial = path + ".partial";
            File.Delete(partial);
            long total = 0;
            await using (var stream = BackupFile.OpenWrite(partial))
            {
                await BackupFile.WriteLineAsync(stream, BackupFile.Line(new BackupHeader(LogicalCopy.Format, LogicalCopy.FormatVersion, schema, DateTime.UtcNow,
                    postgres ? "postgres" : "sqlite", sealedWith)), ct);
                foreach (var table in tables)
                {
                    await BackupFile.WriteLineAsync(stream, BackupFile.Line(new BackupTable(table.Name, table.Columns, table.Key, table.NumberedRows)), ct);
                    var digest = new LogicalCopy.Digest(table.Name);
                    await foreach (var row in LogicalCopy.RowsAsync(connection, tx, table, ct))
                    {
                        await BackupFile.WriteLineAsync(stream, row, ct);
                        digest.Add(row);
                    }
                    var result = digest.Result();
                    await BackupFile.WriteLineAsync(stream, BackupFile.Line(new BackupTableEnd(table.Name, result.Rows, result.Sha256)), ct);
                    total += result.Rows;
                }
                await BackupFile.WriteLineAsync(stream, BackupFile.Line(new BackupEnd(true, tables.Count)), ct);
            }
            File.Move(partial, path);
            Console.WriteLine($"Backed up {tables.Count} tables ({total} rows, schema version {schema}) to {path}.");
            Console.WriteLine(KeyAdvice(sealedWith, "restore"));
        }));
        return command;
    }

    private static Command Restore()
    {
        var file = new Argument<string>("FILE") { Description = "A backup written by portcullis backup." };
        var force = new Option<bool>("--force") { Description = "Replace everything in a database that is not empty." };
        var (dataDir, config) = (ServerSide.DataDirOption(), ServerSide.ConfigOption());
        var command = new Command("restore",
            "Restore a backup into the configured database, with the servers stopped (docs/operations.md).\n\n" +
            "Example:\n  portcullis restore /var/backups/portcullis-2026-12-01.backup --data-dir /var/lib/portcullis") { file, force, dataDir, config };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction((parse, cancellationToken) => ServerSide.RunAsync(parse, dataDir, config, ServerSide.Access.Exclusive, cancellationToken, async (target, ct) =>
        {
            var path = Path.GetFullPath(parse.GetValue(file)!);
            if (!File.Exists(path))
                throw new CliException($"There is no backup at '{path}'.");
            var postgres = target.Database.IsPostgres;
            using var reader = BackupFile.OpenRead(path);
            var header = ReadHeader(await reader.ReadLineAsync(ct), path);
            var newest = Migrator.Scripts(postgres ? "postgres" : "sqlite")[^1].Version;
            if (header.SchemaVersion > newest)
                throw new CliException($"The backup was made by a newer Portcullis (schema version {header.SchemaVersion}; this one knows {newest}). Restore it with that version.");

            // The runner has brought the database to this version's schema (made it, if it was not there).
            await using var connection = ServerSide.OpenConnection(target, ServerSide.Access.Exclusive);
            await connection.OpenAsync(ct);
            var current = LogicalCopy.Shapes(ModelOf(postgres));
            if (await LogicalCopy.FirstNonEmptyTableAsync(connection, current, ct) is { } nonEmpty && !parse.GetValue(force))
                throw NotEmpty(nonEmpty);
            var older = header.SchemaVersion < newest;
            if (older)
            {
                // An older backup goes into the schema it was made with, and is upgraded after, as a start would upgrade it.
                await DropEverythingAsync(connection, postgres, ct);
                await new Migrator(connection, postgres, target.Services.GetRequiredService<ILogger<Migrator>>()).MigrateAsync(targetVersion: header.SchemaVersion, ct);
            }

            var copied = new List<TableDigest>();
            await using (var tx = await connection.BeginTransactionAsync(ct))
            {
                if (!older && parse.GetValue(force))
                    await LogicalCopy.EmptyAsync(connection, tx, current, ct);
                for (var line = await reader.ReadLineAsync(ct); ; line = await reader.ReadLineAsync(ct))
                {
                    if (line is null)
                        throw new InvalidDataException($"The backup '{path}' is cut short: it ends before its last table. Nothing was restored.");
                    if (line.Contains("\"end_of_backup\"", StringComparison.Ordinal))
                        break;
                    var table = BackupFile.Parse<BackupTable>(line, "table").Shape;
                    BackupTableEnd? end = null;
                    var stored = await LogicalCopy.CopyTableAsync(connection, tx, postgres, table, RowsUntilEnd(reader, e => end = e, ct), "the backup", "Nothing was restored.", ct);
                    if (end is null || end.Rows != stored.Rows || end.Sha256 != stored.Sha256)
                        throw new InvalidDataException($"The backup '{path}' is damaged: table {table.Name} does not match its own digest. Nothing was restored.");
                    copied.Add(stored);
                }
                await AuditAsync(connection, tx, "database.restored", new { file = path, header.SchemaVersion, header.CreatedAt, source = header.Source }, ct);
                await tx.CommitAsync(ct);
            }
            await new Migrator(connection, postgres, target.Services.GetRequiredService<ILogger<Migrator>>()).MigrateAsync(cancellationToken: ct);
            Console.WriteLine($"Restored {copied.Count} tables ({copied.Sum(t => t.Rows)} rows) from {path}, made {header.CreatedAt:yyyy-MM-dd HH:mm} UTC " +
                              $"(schema version {header.SchemaVersion}{(header.SchemaVersion < newest ? $", upgraded to {newest}" : "")}).");
            Console.WriteLine(KeyAdvice(header.SealedWith, "start"));
        }));
        return command;
    }

    private static Command MigrateDatabase()
    {
        var to = new Option<string>("--to")
        {
            Description = "The database to copy into: a PostgreSQL connection string, or sqlite:PATH for a SQLite file. It must be empty.",
            Required = true,
        };
        var (dataDir, config) = (ServerSide.DataDirOption(), ServerSide.ConfigOption());
        var command = new Command("migrate-database",
            "Copy everything from the configured database into another one, SQLite to PostgreSQL or back, and check the copy (docs/operations.md).\n\n" +
            "Examples:\n  portcullis migrate-database --to \"Host=db;Database=portcullis;Username=portcullis;Password=...\" --data-dir /var/lib/portcullis\n" +
            "  portcullis migrate-database --to sqlite:/var/lib/portcullis-new/portcullis.db") { to, dataDir, config };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction((parse, cancellationToken) => ServerSide.RunAsync(parse, dataDir, config, ServerSide.Access.Exclusive, cancellationToken, async (target, ct) =>
        {
            var (destination, toPostgres, described) = Destination(parse.GetValue(to)!);
            var fromPostgres = target.Database.IsPostgres;
            await using var source = ServerSide.OpenConnection(target, ServerSide.Access.Exclusive);
            await source.OpenAsync(ct);
            var sealedWith = new List<string>();
            await using (destination)
            {
                await destination.OpenAsync(ct);
                if (fromPostgres == toPostgres && SameDatabase(source, destination))
                    throw new CliException("--to names the database the server already uses.");
                await new Migrator(destination, toPostgres, target.Services.GetRequiredService<ILogger<Migrator>>()).MigrateAsync(cancellationToken: ct);
                var tables = LogicalCopy.Shapes(ModelOf(fromPostgres));
                if (await LogicalCopy.FirstNonEmptyTableAsync(destination, tables, ct) is { } nonEmpty)
                    throw new CliException($"{described} is not empty (table {nonEmpty} has rows). Copy into an empty database.");

                await using var read = await source.BeginTransactionAsync(fromPostgres ? IsolationLevel.RepeatableRead : IsolationLevel.Serializable, ct);
                await using var write = await destination.BeginTransactionAsync(ct);
                sealedWith.AddRange(await SealedWithAsync(source, read, ct));
                Console.WriteLine($"Copying {tables.Count} tables to {described}:");
                foreach (var table in tables)
                {
                    var stored = await LogicalCopy.CopyTableAsync(destination, write, toPostgres, table, LogicalCopy.RowsAsync(source, read, table, ct),
                        "the source", "Nothing was copied.", ct);
                    Console.WriteLine($"  {table.Name,-26} {stored.Rows,9} rows  sha256 {stored.Sha256[..16]}  same on both sides");
                }
                await AuditAsync(destination, write, "database.migrated", new { from = fromPostgres ? "postgres" : "sqlite", to = toPostgres ? "postgres" : "sqlite" }, ct);
                await write.CommitAsync(ct);
            }
            Console.WriteLine($"Done. Point every server at {described} ({(toPostgres ? "Database:Provider=postgres and Database:ConnectionString" : "its data directory")}), " +
                              "and give them the same key-encryption key this one has.");
            Console.WriteLine(KeyAdvice(sealedWith, "start on the new database"));
        }));
        return command;
    }

    /// <summary>The connection <c>--to</c> names: <c>sqlite:PATH</c>, or a PostgreSQL connection string.</summary>
    private static (DbConnection Connection, bool Postgres, string Described) Destination(string to)
    {
        if (to.StartsWith("sqlite:", StringComparison.OrdinalIgnoreCase))
        {
            var path = Path.GetFullPath(to["sqlite:".Length..]);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            return (new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False"), false, $"SQLite file {path}");
        }
        try
        {
            var builder = new NpgsqlConnectionStringBuilder(to);
            return (new NpgsqlConnection(builder.ConnectionString), true, $"PostgreSQL database {builder.Database} on {builder.Host}");
        }
        catch (ArgumentException e)
        {
            throw new CliException($"--to is neither sqlite:PATH nor a PostgreSQL connection string ({e.Message}).", 2);
        }
    }

    private static bool SameDatabase(DbConnection a, DbConnection b) => a is NpgsqlConnection pa && b is NpgsqlConnection pb
        ? pa.Host == pb.Host && pa.Port == pb.Port && pa.Database == pb.Database
        : string.Equals(Path.GetFullPath(a.DataSource), Path.GetFullPath(b.DataSource), StringComparison.Ordinal);

    private static BackupHeader ReadHeader(string? line, string path)
    {
        BackupHeader? header = null;
        try
        {
            header = line is null ? null : BackupFile.Parse<BackupHeader>(line, "first");
        }
        catch (JsonException)
        {
        }
        if (header?.Format != LogicalCopy.Format)
            throw new CliException($"'{path}' is not a Portcullis backup.");
        if (header.FormatVersion > LogicalCopy.FormatVersion)
            throw new CliException($"'{path}' is in backup format {header.FormatVersion}, newer than this Portcullis reads ({LogicalCopy.FormatVersion}). Restore it with a newer version.");
        return header;
    }

    /// <summary>The rows of the current table, up to its end line (handed to <paramref name="ended"/>).</summary>
    private static async IAsyncEnumerable<byte[]> RowsUntilEnd(StreamReader reader, Action<BackupTableEnd> ended,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (line.StartsWith('{'))
            {
                ended(BackupFile.Parse<BackupTableEnd>(line, "table end"));
                yield break;
            }
            yield return System.Text.Encoding.UTF8.GetBytes(line);
        }
    }

    private static CliException NotEmpty(string table) =>
        new($"The database is not empty (table {table} has rows). Restore into an empty database, or add --force to replace everything in it.");

    private static async Task<int> SchemaVersionAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        try
        {
            return Convert.ToInt32(await Sql.ScalarAsync(connection, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", cancellationToken) ?? 0,
                System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (DbException)
        {
            return 0;
        }
    }

    /// <summary>For an older backup: the database goes back to nothing, then gets the backup's schema.</summary>
    private static async Task DropEverythingAsync(DbConnection connection, bool postgres, CancellationToken cancellationToken)
    {
        if (postgres)
        {
            await Sql.ExecuteAsync(connection, "DROP SCHEMA public CASCADE; CREATE SCHEMA public", cancellationToken);
            return;
        }
        var tables = new List<string>();
        await using (var command = Sql.Command(connection, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
                tables.Add(reader.GetString(0));
        }
        await Sql.ExecuteAsync(connection, "PRAGMA foreign_keys = OFF", cancellationToken);
        foreach (var table in tables)
            await Sql.ExecuteAsync(connection, $"DROP TABLE \"{table}\"", cancellationToken);
        await Sql.ExecuteAsync(connection, "PRAGMA foreign_keys = ON", cancellationToken);
    }

    /// <summary>The key-encryption keys the stored signing and Data Protection keys are sealed with.</summary>
    private static async Task<List<string>> SealedWithAsync(DbConnection connection, DbTransaction transaction, CancellationToken cancellationToken)
    {
        var ids = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var query in (string[])["SELECT private_key FROM signing_keys", "SELECT xml FROM data_protection_keys"])
        {
            await using var command = Sql.Command(connection, transaction, query);
            await using var reader = await command.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                if (KeySealing.SealedWith(reader.GetString(0)) is { } id)
                    ids.Add(id);
            }
        }
        return [.. ids];
    }

    private static string KeyAdvice(IReadOnlyList<string> sealedWith, string what) => sealedWith.Count == 0
        ? "It holds no sealed keys."
        : $"Its signing and Data Protection keys are sealed with key-encryption key {string.Join(", ", sealedWith)}: to {what}, the server needs that key " +
          "(the encryption.key file of the data directory, or Keys:EncryptionKeyFile). Keep it apart from the backup, and safe.";

    /// <summary>The copy itself, in the audit log of the database it changed, with the operating-system account that made it.</summary>
    private static Task AuditAsync(DbConnection connection, DbTransaction transaction, string name, object details, CancellationToken cancellationToken) =>
        Sql.ExecuteAsync(connection, transaction, "INSERT INTO audit_events (occurred_at, event, actor, details) VALUES (@at, @event, @actor, @details)", cancellationToken,
            ("@at", DateTime.UtcNow), ("@event", name), ("@actor", $"{Environment.UserName}@{Environment.MachineName} (command line)"),
            ("@details", JsonSerializer.Serialize(details, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })));

    /// <summary>The EF model of the database kind: the tables and columns every copy walks (nothing is connected to).</summary>
    private static Microsoft.EntityFrameworkCore.Metadata.IModel ModelOf(bool postgres)
    {
        var options = new DbContextOptionsBuilder<PortcullisDb>();
        if (postgres)
            options.UseNpgsql("Host=unused");
        else
            options.UseSqlite("Data Source=:memory:");
        using var db = new PortcullisDb(options.Options);
        return db.Model;
    }
}
