using System.CommandLine;
using System.Data.Common;
using Microsoft.Extensions.Options;
using Portcullis.Data;
using Portcullis.Hosting;

namespace Portcullis.Cli;

/// <summary>
/// What the commands that work on the server's own machine share (<c>admin</c>, <c>backup</c>, <c>restore</c>,
/// <c>migrate-database</c>): the configuration <c>serve</c> reads (<c>--config</c>, <c>--data-dir</c>, the environment),
/// its services without starting it, a clear message and a non-zero exit on any problem.
/// </summary>
internal static class ServerSide
{
    public sealed record Target(WebApplication App, IServiceProvider Services)
    {
        public DatabaseOptions Database => Services.GetRequiredService<IOptions<DatabaseOptions>>().Value;
    }

    public enum Access
    {
        /// <summary>Writes: on SQLite the data directory's lock (no server may run), and the schema brought up to date as a start would.</summary>
        Exclusive,

        /// <summary>Reads while the server runs: no lock, no migration.</summary>
        Shared,
    }

    public static Option<string?> DataDirOption() => new("--data-dir") { Description = "Data directory, as for serve (default ./portcullis-data or $PORTCULLIS_DATA_DIR)." };

    public static Option<string?> ConfigOption() => new("--config") { Description = "Configuration file, as for serve (default ./portcullis.json if present)." };

    public static async Task<int> RunAsync(ParseResult parse, Option<string?> dataDir, Option<string?> config, Access access, CancellationToken cancellationToken,
        Func<Target, CancellationToken, Task> work)
    {
        var args = new List<string>();
        if (parse.GetValue(dataDir) is { } dir)
            args.AddRange(["--data-dir", dir]);
        if (parse.GetValue(config) is { } file)
            args.AddRange(["--config", file]);
        args.AddRange(parse.UnmatchedTokens);
        try
        {
            await using var app = ServerApp.Build([.. args], withPipeline: false);
            var target = new Target(app, app.Services);
            if (access == Access.Exclusive)
            {
                _ = app.Services.GetRequiredService<DataDirectory>();
                await using var connection = OpenConnection(target, access);
                await connection.OpenAsync(cancellationToken);
                await new Migrator(connection, target.Database.IsPostgres, app.Services.GetRequiredService<ILogger<Migrator>>()).MigrateAsync(cancellationToken: cancellationToken);
            }
            await work(target, cancellationToken);
            return 0;
        }
        catch (CliException e)
        {
            Console.Error.WriteLine($"portcullis: {e.Message}");
            return e.ExitCode;
        }
        // A damaged backup, a file that cannot be read or written, a database that does not answer: said in one line.
        catch (Exception e) when (e is StartupException or OptionsValidationException or InvalidDataException or System.Text.Json.JsonException
                                      or IOException or UnauthorizedAccessException || DatabaseFailures.IsDatabaseFailure(e))
        {
            Console.Error.WriteLine($"portcullis: {e.Message}");
            return 1;
        }
    }

    /// <summary>
    /// A plain connection to the configured database. Shared access to SQLite reaches the file without the data directory's
    /// lock, which a running server holds: reading beside it is what SQLite's WAL mode is for.
    /// </summary>
    public static DbConnection OpenConnection(Target target, Access access)
    {
        if (target.Database.IsPostgres || access == Access.Exclusive)
            return DatabaseRegistration.OpenRawConnection(target.Services);
        var path = Path.Combine(Path.GetFullPath(target.Services.GetRequiredService<IOptions<ServerOptions>>().Value.DataDir), "portcullis.db");
        if (target.Database.ConnectionString is null && !File.Exists(path))
            throw new CliException($"There is no Portcullis database at '{path}'. Give the data directory serve uses with --data-dir.");
        return new Microsoft.Data.Sqlite.SqliteConnection(target.Database.ConnectionString ?? $"Data Source={path};Mode=ReadOnly;Pooling=False");
    }
}
