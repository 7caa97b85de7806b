using System.Data.Common;

namespace Portcullis.Data;

/// <summary>
/// The one way Portcullis writes SQL by hand (docs/decisions.md, "Reaching the database"): parameterised statements
/// on a connection, in a transaction when given one. Used where SQL earns its place over EF Core: migrations, the
/// start-up steps that run before EF Core has warmed up, upserts and deletes that must answer with RETURNING, multi-row
/// inserts on hot paths, advisory locks, LISTEN/NOTIFY. The statements run unchanged on SQLite and PostgreSQL.
/// </summary>
internal static class Sql
{
    public static DbCommand Command(DbConnection connection, string sql, params (string Name, object? Value)[] parameters) =>
        Command(connection, null, sql, parameters);

    public static DbCommand Command(DbConnection connection, DbTransaction? transaction, string sql, params (string Name, object? Value)[] parameters)
    {
        var cmd = connection.CreateCommand();
        cmd.CommandText = sql;
        cmd.Transaction = transaction;
        foreach (var (name, value) in parameters)
        {
            var p = cmd.CreateParameter();
            p.ParameterName = name;
            p.Value = value ?? DBNull.Value;
            cmd.Parameters.Add(p);
        }
        return cmd;
    }

    public static Task<int> ExecuteAsync(DbConnection connection, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters) =>
        ExecuteAsync(connection, null, sql, cancellationToken, parameters);

    public static async Task<int> ExecuteAsync(DbConnection connection, DbTransaction? transaction, string sql, CancellationToken cancellationToken,
        params (string Name, object? Value)[] parameters)
    {
        await using var cmd = Command(connection, transaction, sql, parameters);
        return await cmd.ExecuteNonQueryAsync(cancellationToken);
    }

    public static async Task<object?> ScalarAsync(DbConnection connection, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters)
    {
        await using var cmd = Command(connection, sql, parameters);
        var value = await cmd.ExecuteScalarAsync(cancellationToken);
        return value is DBNull ? null : value;
    }

    /// <summary>Reads a stored time as UTC, whichever provider wrote it.</summary>
    public static DateTime Utc(DbDataReader reader, int ordinal) => DateTime.SpecifyKind(reader.GetDateTime(ordinal), DateTimeKind.Utc);

    /// <summary>What every SQLite connection is set to, by <see cref="SqlitePragmas"/> for EF Core's and at start-up for the plain one.</summary>
    public const string SqlitePragmaText = "PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000; PRAGMA synchronous=FULL";
}
