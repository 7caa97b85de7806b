using System.Data.Common;
using Microsoft.EntityFrameworkCore.Diagnostics;

namespace Portcullis.Data;

/// <summary>Per-connection SQLite settings: durable commits, a busy timeout instead of instant "database is locked", foreign keys.</summary>
internal sealed class SqlitePragmas : DbConnectionInterceptor
{
    public override void ConnectionOpened(DbConnection connection, ConnectionEndEventData eventData)
    {
        using var cmd = connection.CreateCommand();
        cmd.CommandText = Data.Sql.SqlitePragmaText;
        cmd.ExecuteNonQuery();
    }

    public override async Task ConnectionOpenedAsync(DbConnection connection, ConnectionEndEventData eventData, CancellationToken cancellationToken = default)
    {
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = Data.Sql.SqlitePragmaText;
        await cmd.ExecuteNonQueryAsync(cancellationToken);
    }
}
