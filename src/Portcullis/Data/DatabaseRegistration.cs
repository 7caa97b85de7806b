using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.DataProtection.KeyManagement;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Portcullis.Hosting;

namespace Portcullis.Data;

/// <summary>The database: PostgreSQL when <c>Database:Provider</c> says so, otherwise SQLite in the data directory (docs/configuration.md).</summary>
internal static class DatabaseRegistration
{
    /// <summary>
    /// The data directory, the pooled EF contexts (a factory for singletons, one per request for handlers), the invalidations that keep every cache true (across instances with
    /// PostgreSQL), and the Data Protection key ring kept in the database so that every instance shares it.
    /// </summary>
    public static IServiceCollection AddPortcullisDatabase(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<DatabaseOptions>().Bind(configuration.GetSection(DatabaseOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<DatabaseOptions>, DatabaseOptionsValidator>();
        services.AddSingleton(sp => DataDirectory.Open(sp.GetRequiredService<IOptions<ServerOptions>>().Value.DataDir,
            exclusive: !sp.GetRequiredService<IOptions<DatabaseOptions>>().Value.IsPostgres));
        // One pool of contexts: singletons take theirs from the factory, a request's comes from the same pool.
        services.AddPooledDbContextFactory<PortcullisDb>(ConfigureDatabase);
        services.TryAddScoped(sp => sp.GetRequiredService<IDbContextFactory<PortcullisDb>>().CreateDbContext());
        services.AddSingleton<InvalidationBus>();
        services.AddOptions<TestingOptions>().Bind(configuration.GetSection(TestingOptions.Section));
        services.AddSingleton<CacheStoreDelay>();
        services.AddSingleton<PlainConnections>();
        services.AddSingleton<DataProtectionKeys>();
        services.AddDataProtection().SetApplicationName("portcullis");
        services.AddOptions<KeyManagementOptions>().Configure<IServiceProvider>((o, sp) => o.XmlRepository = sp.GetRequiredService<DataProtectionKeys>());
        if (configuration.GetSection(DatabaseOptions.Section).Get<DatabaseOptions>() is { IsPostgres: true })
        {
            services.AddSingleton<PostgresPublisher>();
            services.AddSingleton<IInvalidationPublisher>(sp => sp.GetRequiredService<PostgresPublisher>());
            services.AddHostedService<PostgresNotifications>();
        }
        return services;
    }

    private static void ConfigureDatabase(IServiceProvider sp, DbContextOptionsBuilder options)
    {
        var database = sp.GetRequiredService<IOptions<DatabaseOptions>>().Value;
        if (database.IsPostgres)
        {
            options.UseNpgsql(database.ConnectionString);
            return;
        }
        options.UseSqlite(SqliteConnectionString(sp)).AddInterceptors(new SqlitePragmas());
    }

    internal static string SqliteConnectionString(IServiceProvider sp) =>
        sp.GetRequiredService<IOptions<DatabaseOptions>>().Value.ConnectionString
        ?? $"Data Source={Path.Combine(sp.GetRequiredService<DataDirectory>().Path, "portcullis.db")};Pooling=True;Default Timeout=30";

    /// <summary>A plain ADO.NET connection to the configured database, for start-up steps that run before EF is warm.</summary>
    internal static System.Data.Common.DbConnection OpenRawConnection(IServiceProvider sp)
    {
        var database = sp.GetRequiredService<IOptions<DatabaseOptions>>().Value;
        return database.IsPostgres
            ? new Npgsql.NpgsqlConnection(database.ConnectionString)
            : new Microsoft.Data.Sqlite.SqliteConnection(SqliteConnectionString(sp));
    }
}
