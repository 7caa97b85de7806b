using System.Data.Common;
using System.Globalization;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Metadata;

namespace Portcullis.Data;

/// <summary>A column as the copy carries it: its name and one of the types of docs/operations.md, "The backup format".</summary>
internal sealed record ColumnShape(string Name, string Type);

/// <summary>A table in the order the copy writes it (parents before children), with its key and whether the database numbers its rows.</summary>
internal sealed record TableShape(string Name, IReadOnlyList<ColumnShape> Columns, IReadOnlyList<string> Key, bool NumberedRows);

/// <summary>What was copied of one table: how many rows, and the SHA-256 of their neutral form.</summary>
internal sealed record TableDigest(string Table, long Rows, string Sha256);

/// <summary>
/// Every table of Portcullis's database in a form that is the same whichever database holds it (docs/operations.md, "The
/// backup format"): rows as JSON arrays, timestamps as UTC ISO 8601 to the microsecond (what PostgreSQL keeps), booleans as
/// JSON booleans. Backups are this form in a file; moving between SQLite and PostgreSQL is this form streamed from one
/// to the other. Each table's rows are counted and digested on the way out and read back and digested again on the way in,
/// so a copy that differs is noticed.
/// </summary>
internal static class LogicalCopy
{
    public const string Format = "portcullis-backup";
    public const int FormatVersion = 1;

    /// <summary>Every table, parents first. A table the model has that is missing here stops the copy (see <see cref="Shapes"/>).</summary>
    private static readonly string[] Order =
    [
        "users", "api_tokens", "token_usage", "token_scope_usage", "token_links", "token_notices", "oauth_clients", "sessions",
        "webhooks", "webhook_deliveries", "audit_events", "signing_keys", "revoked_jwts", "gateway_services", "handshake_codes",
        "data_protection_keys", "login_throttle", "device_codes", "exchanged_subject_tokens",
    ];

    /// <summary>The tables and columns of the EF model, in <see cref="Order"/>.</summary>
    public static IReadOnlyList<TableShape> Shapes(IModel model)
    {
        var byTable = model.GetEntityTypes().Where(e => e.GetTableName() is not null).ToDictionary(e => e.GetTableName()!, StringComparer.Ordinal);
        if (byTable.Keys.Except(Order).FirstOrDefault() is { } forgotten)
            throw new InvalidOperationException($"The table '{forgotten}' is not in LogicalCopy's order: add it there, after the tables it refers to.");
        return
        [
            .. Order.Select(name =>
            {
                var entity = byTable[name];
                var store = StoreObjectIdentifier.Table(name);
                var key = entity.FindPrimaryKey()!.Properties;
                return new TableShape(name,
                    [.. entity.GetProperties().Select(p => new ColumnShape(p.GetColumnName(store)!, TypeOf(p)))],
                    [.. key.Select(p => p.GetColumnName(store)!)],
                    key is [{ ValueGenerated: ValueGenerated.OnAdd } only] && TypeOf(only) is "int64" or "int32");
            }),
        ];
    }

    private static string TypeOf(IReadOnlyProperty property)
    {
        var type = property.GetValueConverter()?.ProviderClrType ?? property.ClrType;
        type = Nullable.GetUnderlyingType(type) ?? type;
        if (type.IsEnum)
            type = Enum.GetUnderlyingType(type);
        return type switch
        {
            _ when type == typeof(long) => "int64",
            _ when type == typeof(int) || type == typeof(short) => "int32",
            _ when type == typeof(bool) => "bool",
            _ when type == typeof(string) => "text",
            _ when type == typeof(DateTime) => "timestamp",
            _ when type == typeof(byte[]) => "bytes",
            _ when type == typeof(double) => "float64",
            _ => throw new InvalidOperationException($"{property.DeclaringType.DisplayName()}.{property.Name} is a {type.Name}, which the copy does not carry yet."),
        };
    }

    /// <summary>Reads one table's rows, in key order, as neutral JSON lines.</summary>
    public static async IAsyncEnumerable<byte[]> RowsAsync(DbConnection connection, DbTransaction? transaction, TableShape table,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var columns = string.Join(", ", table.Columns.Select(c => c.Name));
        await using var command = Sql.Command(connection, transaction, $"SELECT {columns} FROM {table.Name} ORDER BY {string.Join(", ", table.Key)}");
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        using var buffer = new MemoryStream();
        while (await reader.ReadAsync(cancellationToken))
        {
            buffer.SetLength(0);
            await using (var json = new Utf8JsonWriter(buffer))
            {
                json.WriteStartArray();
                for (var i = 0; i < table.Columns.Count; i++)
                    WriteValue(json, reader, i, table.Columns[i].Type);
                json.WriteEndArray();
            }
            yield return buffer.ToArray();
        }
    }

    private static void WriteValue(Utf8JsonWriter json, DbDataReader reader, int i, string type)
    {
        if (reader.IsDBNull(i))
        {
            json.WriteNullValue();
            return;
        }
        switch (type)
        {
            case "int64": json.WriteNumberValue(reader.GetInt64(i)); break;
            case "int32": json.WriteNumberValue(reader.GetInt32(i)); break;
            case "bool": json.WriteBooleanValue(reader.GetBoolean(i)); break;
            case "float64": json.WriteNumberValue(reader.GetDouble(i)); break;
            case "bytes": json.WriteBase64StringValue(reader.GetFieldValue<byte[]>(i)); break;
            case "timestamp": json.WriteStringValue(Timestamp(reader.GetDateTime(i))); break;
            default: json.WriteStringValue(reader.GetString(i)); break;
        }
    }

    /// <summary>UTC to the microsecond: SQLite keeps ticks, PostgreSQL microseconds; the copy keeps what both can.</summary>
    private static string Timestamp(DateTime value)
    {
        var utc = DateTime.SpecifyKind(value, DateTimeKind.Utc);
        return new DateTime(utc.Ticks - utc.Ticks % 10, DateTimeKind.Utc).ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture);
    }

    /// <summary>Inserts neutral rows into one table of <paramref name="connection"/> (which must be empty), keeping their keys.</summary>
    public static async Task<TableDigest> InsertAsync(DbConnection connection, DbTransaction transaction, bool postgres, TableShape table,
        IAsyncEnumerable<byte[]> rows, CancellationToken cancellationToken)
    {
        var names = table.Columns.Select(c => c.Name).ToList();
        // GENERATED ALWAYS identity columns take the rows' own numbers only when told to.
        var overriding = postgres && table.NumberedRows ? " OVERRIDING SYSTEM VALUE" : "";
        await using var insert = Sql.Command(connection, transaction,
            $"INSERT INTO {table.Name} ({string.Join(", ", names)}){overriding} VALUES ({string.Join(", ", names.Select((_, i) => "@p" + i))})",
            [.. names.Select((_, i) => ("@p" + i, (object?)null))]);
        var digest = new Digest(table.Name);
        await foreach (var row in rows.WithCancellation(cancellationToken))
        {
            using var document = JsonDocument.Parse(row);
            var values = document.RootElement;
            if (values.ValueKind != JsonValueKind.Array || values.GetArrayLength() != names.Count)
                throw new InvalidDataException($"A row of {table.Name} does not have its {names.Count} columns.");
            for (var i = 0; i < names.Count; i++)
                insert.Parameters["@p" + i].Value = ReadValue(values[i], table.Columns[i].Type) ?? DBNull.Value;
            await insert.ExecuteNonQueryAsync(cancellationToken);
            digest.Add(row);
        }
        if (postgres && table.NumberedRows)
        {
            // The next row made after the copy must not take a number the copy brought.
            var key = table.Key[0];
            await Sql.ExecuteAsync(connection, transaction,
                $"SELECT setval(pg_get_serial_sequence('{table.Name}', '{key}'), max({key})) FROM {table.Name} HAVING max({key}) IS NOT NULL", cancellationToken);
        }
        return digest.Result();
    }

    private static object? ReadValue(JsonElement value, string type) => value.ValueKind == JsonValueKind.Null ? null : type switch
    {
        "int64" => value.GetInt64(),
        "int32" => value.GetInt32(),
        "bool" => value.GetBoolean(),
        "float64" => value.GetDouble(),
        "bytes" => value.GetBytesFromBase64(),
        "timestamp" => DateTime.ParseExact(value.GetString()!, "yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture,
            DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal),
        _ => value.GetString(),
    };

    /// <summary>
    /// <see cref="InsertAsync"/>, then the table read back and compared with what went in: its digest, or
    /// <see cref="InvalidDataException"/> saying that the copy of <paramref name="source"/> differs and that <paramref name="outcome"/>.
    /// </summary>
    public static async Task<TableDigest> CopyTableAsync(DbConnection connection, DbTransaction transaction, bool postgres, TableShape table,
        IAsyncEnumerable<byte[]> rows, string source, string outcome, CancellationToken cancellationToken)
    {
        var inserted = await InsertAsync(connection, transaction, postgres, table, rows, cancellationToken);
        var stored = await DigestAsync(connection, transaction, table, cancellationToken);
        if (stored != inserted)
            throw new InvalidDataException($"Table {table.Name} reads back differently from {source} ({stored.Rows} rows, {inserted.Rows} expected). {outcome}");
        return stored;
    }

    /// <summary>Counts and digests one table as it is in <paramref name="connection"/>: what a copy of it must match.</summary>
    public static async Task<TableDigest> DigestAsync(DbConnection connection, DbTransaction? transaction, TableShape table, CancellationToken cancellationToken)
    {
        var digest = new Digest(table.Name);
        await foreach (var row in RowsAsync(connection, transaction, table, cancellationToken))
            digest.Add(row);
        return digest.Result();
    }

    /// <summary>Whether any table of Portcullis's holds a row (the schema alone does not count).</summary>
    public static async Task<string?> FirstNonEmptyTableAsync(DbConnection connection, IReadOnlyList<TableShape> tables, CancellationToken cancellationToken)
    {
        foreach (var table in tables)
        {
            if (await Sql.ScalarAsync(connection, $"SELECT 1 FROM {table.Name} LIMIT 1", cancellationToken) is not null)
                return table.Name;
        }
        return null;
    }

    /// <summary>Empties every table, children first (<c>restore --force</c>).</summary>
    public static async Task EmptyAsync(DbConnection connection, DbTransaction transaction, IReadOnlyList<TableShape> tables, CancellationToken cancellationToken)
    {
        foreach (var table in tables.Reverse())
            await Sql.ExecuteAsync(connection, transaction, $"DELETE FROM {table.Name}", cancellationToken);
    }

    /// <summary>The running SHA-256 of a table's neutral rows, each followed by a newline, and their count.</summary>
    internal sealed class Digest(string table)
    {
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private long _rows;

        public void Add(byte[] row)
        {
            _hash.AppendData(row);
            _hash.AppendData("\n"u8);
            _rows++;
        }

        public TableDigest Result()
        {
            var result = new TableDigest(table, _rows, Convert.ToHexStringLower(_hash.GetHashAndReset()));
            _hash.Dispose();
            return result;
        }
    }
}

/// <summary>
/// A backup file (docs/operations.md, "The backup format"): gzip of JSON lines. The first line says what it is (format and
/// its version, the schema version, when, from which database, and the key-encryption keys its stored keys are sealed
/// with); then, per table, a line naming the table and its columns, a line per row, and a line with the count and digest;
/// a last line marks the end, so that a cut file is noticed.
/// </summary>
internal sealed record BackupHeader(string Format, int FormatVersion, int SchemaVersion, DateTime CreatedAt, string Source, IReadOnlyList<string> SealedWith);

internal sealed record BackupTable(string Table, IReadOnlyList<ColumnShape> Columns, IReadOnlyList<string> Key, bool NumberedRows)
{
    public TableShape Shape => new(Table, Columns, Key, NumberedRows);
}

internal sealed record BackupTableEnd(string End, long Rows, string Sha256);

internal sealed record BackupEnd(bool EndOfBackup, int Tables);

internal static class BackupFile
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static byte[] Line<T>(T value) => JsonSerializer.SerializeToUtf8Bytes(value, Json);

    public static T Parse<T>(string line, string what) =>
        JsonSerializer.Deserialize<T>(line, Json) ?? throw new InvalidDataException($"The backup's {what} line is empty.");

    public static async Task WriteLineAsync(Stream stream, byte[] line, CancellationToken cancellationToken)
    {
        await stream.WriteAsync(line, cancellationToken);
        stream.WriteByte((byte)'\n');
    }

    /// <summary>A new file only its owner may read: a backup holds password and token hashes and the sealed keys.</summary>
    public static Stream OpenWrite(string path)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        return new GZipStream(new FileStream(path, options), CompressionLevel.Optimal);
    }

    public static StreamReader OpenRead(string path) =>
        new(new GZipStream(File.OpenRead(path), CompressionMode.Decompress), Encoding.UTF8);
}
