using System.Data.Common;
using Microsoft.Extensions.Options;

namespace Portcullis.Data;

/// <summary>
/// Plain ADO.NET connections to the configured database, set up as EF Core's are (on SQLite, <see cref="Sql.SqlitePragmaText"/>),
/// for the reads that must not wait for EF Core: any use of a context first builds and validates its model, which holds
/// start-up for hundreds of milliseconds (docs/performance.md, "Start-up").
/// </summary>
internal sealed class PlainConnections(IServiceProvider services, IOptions<DatabaseOptions> options)
{
    private readonly bool _sqlite = !options.Value.IsPostgres;

    public DbConnection Open()
    {
        var connection = DatabaseRegistration.OpenRawConnection(services);
        connection.Open();
        if (_sqlite)
        {
            using var pragmas = Sql.Command(connection, Sql.SqlitePragmaText);
            pragmas.ExecuteNonQuery();
        }
        return connection;
    }

    public async Task<DbConnection> OpenAsync(CancellationToken cancellationToken)
    {
        var connection = DatabaseRegistration.OpenRawConnection(services);
        await connection.OpenAsync(cancellationToken);
        if (_sqlite)
            await Sql.ExecuteAsync(connection, Sql.SqlitePragmaText, cancellationToken);
        return connection;
    }
}
