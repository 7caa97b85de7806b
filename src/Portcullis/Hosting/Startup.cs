using Microsoft.AspNetCore.DataProtection.KeyManagement;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Gateway;
using Portcullis.Security;
using Portcullis.ServicePrincipals;
using Portcullis.Tokens;
using Portcullis.Users;

namespace Portcullis.Hosting;

/// <summary>
/// Start-up of <c>portcullis serve</c>: every configuration problem reported at once, then the data directory,
/// migrations, the first admin, keys and caches, while Kestrel already answers the health probes.
/// </summary>
internal static class Startup
{
    /// <summary>
    /// Starts listening while <see cref="InitializeAsync"/> runs, then opens the start-up gate. Both
    /// are needed before anything but the health probes is answered.
    /// </summary>
    public static async Task StartAsync(WebApplication app, CancellationToken cancellationToken = default)
    {
        // EF Core builds its model on first use, which takes hundreds of milliseconds cold. Nothing before the gate opens
        // uses EF Core (the start-up steps, the Data Protection key ring, the registered services and /readyz use plain
        // SQL), so the model is built on another thread meanwhile, and the first requests find it ready or nearly.
        var model = Task.Run(() =>
        {
            try
            {
                using var db = app.Services.GetRequiredService<IDbContextFactory<PortcullisDb>>().CreateDbContext();
                _ = db.Model;
            }
            // Start-up reports these itself (a locked data directory), or has failed and is disposing the services.
            catch (Exception e) when (e is StartupException or ObjectDisposedException)
            {
            }
        }, CancellationToken.None);
        // SQLite calls complete synchronously, so initialisation gets its own thread to overlap with Kestrel.
        await Task.WhenAll(Task.Run(() => InitializeAsync(app, cancellationToken), cancellationToken), app.StartAsync(cancellationToken));
        app.Services.GetRequiredService<StartupGate>().Open();
        app.Services.GetRequiredService<ManagedProcesses>().Begin(app.Lifetime.ApplicationStopping);
        _ = Task.Run(async () =>
        {
            await model;
            await WarmUpAsync(app.Services);
        }, CancellationToken.None);
    }

    /// <summary>Data directory, migrations, first admin, signing keys.</summary>
    private static async Task InitializeAsync(WebApplication app, CancellationToken cancellationToken = default)
    {
        try
        {
            await InitializeStepsAsync(app, cancellationToken);
        }
        finally
        {
            app.Services.GetRequiredService<KeySealing>().EndOfStart();
        }
    }

    private static async Task InitializeStepsAsync(WebApplication app, CancellationToken cancellationToken)
    {
        var services = app.Services;
        _ = services.GetRequiredService<DataDirectory>();
        var database = services.GetRequiredService<IOptions<DatabaseOptions>>().Value;
        try
        {
            await using var connection = DatabaseRegistration.OpenRawConnection(services);
            await connection.OpenAsync(cancellationToken);
            await new Migrator(connection, database.IsPostgres, services.GetRequiredService<ILogger<Migrator>>()).MigrateAsync(cancellationToken: cancellationToken);
            if (!database.IsPostgres)
                await Sql.ExecuteAsync(connection, Sql.SqlitePragmaText, cancellationToken);
            await AdminBootstrap.RunAsync(connection, services.GetRequiredService<PasswordHasher>(), services.GetRequiredService<AuditLog>(),
                services.GetRequiredService<TimeProvider>(), cancellationToken);
            await services.GetRequiredService<KeySealing>().PrepareAsync(connection, services.GetRequiredService<DataDirectory>().Path, cancellationToken);
            await services.GetRequiredService<SigningKeys>().LoadAsync(connection, cancellationToken);
            await services.GetRequiredService<RevokedJwts>().LoadAsync(connection, cancellationToken);
            await services.GetRequiredService<ServiceSync>().RunAsync(connection, cancellationToken);
            await services.GetRequiredService<TokenCache>().LoadExistingAsync(connection, cancellationToken);
            await services.GetRequiredService<ServiceRegistry>().ReloadAsync(cancellationToken);
            await DataProtectionKeys.EnsureKeyAsync(connection, database.IsPostgres, services.GetRequiredService<IKeyManager>(), cancellationToken);
        }
        catch (Exception e) when (e is not StartupException && DatabaseFailures.IsDatabaseFailure(e))
        {
            var reason = e.InnerException is { } inner ? $"{e.Message} ({inner.Message})" : e.Message;
            throw new StartupException($"Cannot open the {(database.IsPostgres ? "PostgreSQL" : "SQLite")} database: {reason}. " +
                (database.IsPostgres ? "Check Database:ConnectionString and that the server is reachable." : "Check that the data directory is writable."));
        }
        if (database.IsPostgres && string.IsNullOrEmpty(services.GetRequiredService<IOptions<ServerOptions>>().Value.PublicUrl))
        {
            services.GetRequiredService<ILogger<Migrator>>().LogWarning(
                "PublicUrl is not set: JWTs from this instance name {Issuer} as their issuer, and other instances on this database refuse them. " +
                "Set PublicUrl to the one URL clients use (the load balancer's) on every instance.", services.GetRequiredService<PublicUrl>().Value);
        }
    }

    /// <summary>
    /// Compiles the queries of the verification path once, in the background after start, so the
    /// first real request does not pay for it.
    /// </summary>
    private static async Task WarmUpAsync(IServiceProvider services)
    {
        try
        {
            var format = services.GetRequiredService<TokenFormat>();
            await services.GetRequiredService<CredentialVerifier>().VerifyAsync(format.Generate(TokenKind.Personal), null, CancellationToken.None);
            await services.GetRequiredService<PrincipalCache>().GetAsync(0, CancellationToken.None);
        }
        catch (Exception e) when (DatabaseFailures.IsDatabaseFailure(e))
        {
        }
    }

    /// <summary>Reports every configuration problem at once rather than the first one found.</summary>
    internal static void ValidateAllOptions(IServiceProvider services)
    {
        var failures = new List<string>();
        Check<ServerOptions>();
        Check<DatabaseOptions>();
        Check<TokenOptions>();
        Check<JwtOptions>();
        Check<AuthOptions>();
        Check<GatewayOptions>();
        Check<ServicesOptions>();
        Check<MetricsOptions>();
        if (failures.Count > 0)
            throw new StartupException(string.Join('\n', failures));

        void Check<T>() where T : class
        {
            try
            {
                _ = services.GetRequiredService<IOptions<T>>().Value;
            }
            catch (OptionsValidationException e)
            {
                failures.AddRange(e.Failures);
            }
            catch (InvalidOperationException e)
            {
                // Binding failures ("Failed to convert configuration value at 'Tokens:CacheSize' ...") name the key.
                failures.Add(e.Message + " Fix the value of that key.");
            }
        }
    }

    /// <summary><c>/readyz</c>: 200 once started and while the database answers, otherwise 503.</summary>
    internal static async Task<IResult> ReadyAsync(PlainConnections connections, StartupGate gate, CancellationToken cancellationToken)
    {
        if (!gate.IsOpen)
            return TypedResults.Text("starting", statusCode: StatusCodes.Status503ServiceUnavailable);
        try
        {
            // A plain connection: readiness asks "does the database answer", and must not wait for EF Core's model.
            await using var connection = await connections.OpenAsync(cancellationToken);
            if (await Sql.ScalarAsync(connection, "SELECT 1", cancellationToken) is not null)
                return TypedResults.Text("ready");
        }
        catch (Exception e) when (DatabaseFailures.IsDatabaseFailure(e))
        {
        }
        return TypedResults.Text("database unavailable", statusCode: StatusCodes.Status503ServiceUnavailable);
    }
}

/// <summary>
/// Kestrel starts listening while migrations, the first admin and the signing keys are still being
/// set up; until then every request but the health probes is told to retry.
/// </summary>
internal sealed class StartupGate
{
    private volatile bool _open;

    public bool IsOpen => _open;

    public void Open() => _open = true;

    public Task Middleware(HttpContext context, Func<Task> next)
    {
        if (_open || context.Request.Path.StartsWithSegments("/healthz") || context.Request.Path.StartsWithSegments("/readyz"))
            return next();
        context.Response.Headers.RetryAfter = "1";
        return ProblemResponses.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "Starting", "Portcullis is starting. Try again in a moment.");
    }
}
