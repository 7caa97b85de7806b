using System.Text.Json;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.HttpOverrides;
using Microsoft.AspNetCore.DataProtection.KeyManagement;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Clients;
using Portcullis.Compat;
using Portcullis.Data;
using Portcullis.Gateway;
using Portcullis.Services;
using Portcullis.Web;
using Portcullis.Security;
using Portcullis.Tokens;
using Portcullis.Users;

namespace Portcullis.Hosting;

/// <summary>
/// <c>portcullis serve</c>: configuration, services and the HTTP pipeline. Reads like a table of
/// contents; each feature's endpoints live in its own folder.
/// </summary>
internal static class ServerApp
{
    public const string DefaultUrl = "http://127.0.0.1:8080";

    /// <summary>Builds the server. <paramref name="configureServices"/> lets tests swap the clock.</summary>
    public static WebApplication Build(string[] args, Action<IServiceCollection>? configureServices = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        ConfigureConfiguration(builder.Configuration, args);
        var configuration = builder.Configuration;

        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ "; o.UseUtcTimestamp = true; });
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.EntityFrameworkCore", LogLevel.Warning);
        // YARP logs every forwarded request at Information ("Proxying to ..."): a formatted console line per request.
        builder.Logging.AddFilter("Yarp", LogLevel.Warning);
        // With this category enabled at any level, hosting makes an Activity and a logging scope for every request.
        // Nothing is lost: start-up failures are reported by Program.cs, request failures by the exception handler.
        builder.Logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);
        // The base handler logs every unauthenticated request and challenge at Information: noise at best,
        // and a cost per request under a flood of bad credentials. Failures are counted in /metrics instead.
        builder.Logging.AddFilter("Portcullis.Auth.CredentialAuthenticationHandler", LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Information);
        // The key ring is sealed where it is stored (Data/DataProtectionKeys.cs); Data Protection's own "no XML
        // encryptor" warning cannot know that and would only alarm.
        builder.Logging.AddFilter("Microsoft.AspNetCore.DataProtection", LogLevel.Error);
        var metricsUrl = configuration[$"{MetricsOptions.Section}:{nameof(MetricsOptions.ListenUrl)}"];
        builder.WebHost.UseUrls((configuration["urls"] ?? DefaultUrl) + (string.IsNullOrEmpty(metricsUrl) ? "" : ";" + metricsUrl));
        builder.WebHost.ConfigureKestrel(k => k.AddServerHeader = false);

        var services = builder.Services;
        services.AddSingleton<IValidateOptions<DatabaseOptions>, OptionsValidator>();
        services.AddSingleton<IValidateOptions<TokenOptions>, OptionsValidator>();
        services.AddSingleton<IValidateOptions<JwtOptions>, OptionsValidator>();
        services.AddSingleton<IValidateOptions<AuthOptions>, OptionsValidator>();
        services.AddSingleton<IValidateOptions<ServerOptions>, OptionsValidator>();
        services.AddSingleton<IValidateOptions<GatewayOptions>, GatewayOptionsValidator>();
        services.AddOptions<ServerOptions>().Bind(configuration).ValidateOnStart();
        services.AddOptions<DatabaseOptions>().Bind(configuration.GetSection(DatabaseOptions.Section)).ValidateOnStart();
        services.AddOptions<TokenOptions>().Bind(configuration.GetSection(TokenOptions.Section)).ValidateOnStart();
        services.AddOptions<JwtOptions>().Bind(configuration.GetSection(JwtOptions.Section)).ValidateOnStart();
        services.AddOptions<AuthOptions>().Bind(configuration.GetSection(AuthOptions.Section)).ValidateOnStart();
        services.AddOptions<GatewayOptions>().Bind(configuration.GetSection(GatewayOptions.Section)).ValidateOnStart();
        services.AddOptions<WebOptions>().Bind(configuration.GetSection(WebOptions.Section));
        services.AddOptions<ServicesOptions>().Configure(o => ServicesConfiguration.Bind(configuration, o, o.BindingErrors)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<ServicesOptions>, ServicesOptionsValidator>();
        services.AddSingleton<ServiceSync>();
        services.AddSingleton<ManagedProcesses>();
        services.AddHostedService(sp => sp.GetRequiredService<ManagedProcesses>());

        services.AddSingleton(TimeProvider.System);
        services.AddSingleton(sp => new PublicUrl(ResolvePublicUrl(sp.GetRequiredService<IOptions<ServerOptions>>().Value, configuration)));
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<ServerOptions>>().Value.DataDir is var dir
            ? DataDirectory.Open(dir, exclusive: !sp.GetRequiredService<IOptions<DatabaseOptions>>().Value.IsPostgres)
            : throw new InvalidOperationException());
        services.AddDbContextPool<PortcullisDb>((sp, options) => ConfigureDatabase(sp, options));
        services.AddSingleton<StartupGate>();

        services.AddSingleton(sp => new TokenFormat(sp.GetRequiredService<IOptions<TokenOptions>>().Value.Prefix));
        services.AddSingleton<PasswordHasher>();
        services.AddOptions<TestingOptions>().Bind(configuration.GetSection(TestingOptions.Section));
        services.AddSingleton<CacheStoreDelay>();
        services.AddSingleton<TokenCache>();
        services.AddSingleton<PrincipalCache>();
        services.AddSingleton<InvalidationBus>();
        services.AddSingleton<SessionStore>();
        services.AddSingleton<TrustedProxies>();
        services.AddGateway();
        services.AddOptions<KeysOptions>().Bind(configuration.GetSection(KeysOptions.Section));
        services.AddSingleton<KeySealing>();
        services.AddSingleton<SigningKeys>();
        services.AddSingleton<JwtService>();
        services.AddSingleton<RevokedJwts>();
        services.AddSingleton<ClientCache>();
        services.AddSingleton<ClientAuthenticator>();
        services.AddSingleton<ClientCredentialsGrant>();
        services.AddHostedService<OAuthMaintenance>();
        services.AddSingleton<CredentialVerifier>();
        services.AddSingleton<PrometheusMetrics>();
        services.AddSingleton<UsageRecorder>();
        services.AddHostedService(sp => sp.GetRequiredService<UsageRecorder>());
        services.AddOptions<AuditOptions>().Bind(configuration.GetSection(AuditOptions.Section));
        services.AddSingleton<AuditLog>();
        services.AddHostedService(sp => sp.GetRequiredService<AuditLog>());
        services.AddScoped<TokenEndpoint>();
        services.AddSingleton<FullCounters>();
        services.AddScoped<LoginThrottle>();
        if (configuration.GetSection(DatabaseOptions.Section).Get<DatabaseOptions>() is { IsPostgres: true })
            services.AddHostedService<PostgresNotifications>();

        services.AddAuthentication(CredentialAuthenticationHandler.SchemeName)
            .AddScheme<AuthenticationSchemeOptions, CredentialAuthenticationHandler>(CredentialAuthenticationHandler.SchemeName, null);
        services.AddAuthorization(Policies.Add);
        services.AddSingleton<IAuthorizationMiddlewareResultHandler, ScopeAwareResultHandler>();

        // The key ring is in the database, shared by every instance (Data/DataProtectionKeys.cs).
        services.AddSingleton<DataProtectionKeys>();
        services.AddDataProtection().SetApplicationName("portcullis");
        services.AddOptions<Microsoft.AspNetCore.Antiforgery.AntiforgeryOptions>().Configure<PublicUrl>((o, url) =>
        {
            // Under HTTPS (or behind a proxy that terminates it, per PublicUrl): Secure and __Host-, like the session cookie.
            var https = url.Value.StartsWith("https://", StringComparison.OrdinalIgnoreCase);
            o.Cookie.Name = PortcullisCookies.Antiforgery(https);
            o.Cookie.SecurePolicy = https ? CookieSecurePolicy.Always : CookieSecurePolicy.SameAsRequest;
            o.Cookie.SameSite = SameSiteMode.Strict;
            o.Cookie.HttpOnly = true;
            o.Cookie.Path = "/";
            o.HeaderName = "X-CSRF-Token";
            o.FormFieldName = "csrf_token";
        });
        services.AddAntiforgery();
        services.AddWebPages();
        services.AddOptions<KeyManagementOptions>().Configure<IServiceProvider>((o, sp) => o.XmlRepository = sp.GetRequiredService<DataProtectionKeys>());
        services.AddProblemDetails();
        services.AddOpenApi(OpenApiDocument.Configure);
        services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
            o.SerializerOptions.DictionaryKeyPolicy = null;
        });
        services.AddHealthChecks();
        services.AddMetricsEndpoint(configuration);
        configureServices?.Invoke(services);

        var app = builder.Build();
        ConfigurePipeline(app);
        return app;
    }

    /// <summary>
    /// Layers configuration as docs/configuration.md says: JSON file &lt; <c>PORTCULLIS_*</c> environment variables &lt;
    /// command line. The file is <c>--config FILE</c> (must exist) or <c>./portcullis.json</c> if present.
    /// </summary>
    private static void ConfigureConfiguration(ConfigurationManager configuration, string[] args)
    {
        var commandLine = new ConfigurationBuilder().AddCommandLine(args, SwitchMappings).Build();
        var explicitFile = commandLine["Config"];
        var file = explicitFile ?? Path.Combine(Directory.GetCurrentDirectory(), "portcullis.json");
        if (explicitFile is not null && !File.Exists(file))
            throw new StartupException($"The configuration file '{file}' given with --config does not exist.");

        configuration.Sources.Clear();
        configuration.AddJsonFile(Path.GetFullPath(file), optional: true, reloadOnChange: false);
        configuration.AddEnvironmentVariables("PORTCULLIS_");
        if (Environment.GetEnvironmentVariable("PORTCULLIS_DATA_DIR") is { Length: > 0 } dataDir)
            configuration.AddInMemoryCollection([new("DataDir", dataDir)]);
        configuration.AddCommandLine(args, SwitchMappings);
    }

    private static readonly Dictionary<string, string> SwitchMappings = new()
    {
        ["--urls"] = "urls",
        ["--data-dir"] = "DataDir",
        ["--config"] = "Config",
    };

    private static string ResolvePublicUrl(ServerOptions options, IConfiguration configuration)
    {
        if (options.PublicUrl is { Length: > 0 } configured)
            return configured.TrimEnd('/');
        var first = (configuration["urls"] ?? DefaultUrl).Split(';', StringSplitOptions.RemoveEmptyEntries)[0];
        return first.TrimEnd('/');
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

    private static string SqliteConnectionString(IServiceProvider sp) =>
        sp.GetRequiredService<IOptions<DatabaseOptions>>().Value.ConnectionString
        ?? $"Data Source={Path.Combine(sp.GetRequiredService<DataDirectory>().Path, "portcullis.db")};Pooling=True;Default Timeout=30";

    private static System.Data.Common.DbConnection OpenRawConnection(IServiceProvider sp)
    {
        var database = sp.GetRequiredService<IOptions<DatabaseOptions>>().Value;
        return database.IsPostgres
            ? new Npgsql.NpgsqlConnection(database.ConnectionString)
            : new Microsoft.Data.Sqlite.SqliteConnection(SqliteConnectionString(sp));
    }

    private static void ConfigurePipeline(WebApplication app)
    {
        // Behind a trusted proxy that terminates TLS, X-Forwarded-Proto says the request was HTTPS (cookies then
        // become Secure). Only the scheme is taken: client addresses stay the TCP peer's (see docs/decisions.md).
        var forwarded = new ForwardedHeadersOptions { ForwardedHeaders = ForwardedHeaders.XForwardedProto, ForwardLimit = 1 };
        forwarded.KnownProxies.Clear();
        forwarded.KnownIPNetworks.Clear();
        foreach (var network in app.Services.GetRequiredService<TrustedProxies>().Networks)
            forwarded.KnownIPNetworks.Add(network);
        app.UseForwardedHeaders(forwarded);
        app.UseExceptionHandler(new ExceptionHandlerOptions { ExceptionHandler = HandleExceptionAsync, StatusCodeSelector = null });
        app.UseMetricsListener();
        app.Use(app.Services.GetRequiredService<StartupGate>().Middleware);
        // Forwarded requests go no further than this: nothing of the UI's or the API's middleware applies to them,
        // not even routing (hence the explicit UseRouting after it).
        app.UseMiddleware<GatewayMiddleware>();
        app.UseRouting();
        app.UseStatusCodePages();
        app.Use(ApiHeaders);
        app.UseMiddleware<RequestMetricsMiddleware>();
        app.UseWebStaticFiles();
        if (app.Services.GetRequiredService<PublicUrl>().Value.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
            app.Use(Web.WebPages.HttpsForPages);
        app.UseAuthentication();
        app.Use(Web.WebPages.SessionAntiforgery);
        app.UseAuthorization();

        app.MapGet("/healthz", () => TypedResults.Text("ok")).WithTags("Health");
        app.MapGet("/readyz", ReadyAsync).WithTags("Health");
        app.MapMetrics();
        app.MapOpenApi();

        app.MapAuth();
        app.MapDaeploy();
        var api = app.MapGroup("/api/v1").RequireAuthorization(Policies.Api);
        api.MapTokens();
        api.MapUsers();
        api.MapAudit();
        api.MapClients();
        api.MapKeys();
        api.MapManagedServices();
        app.MapGroup("/api/v1").MapMe();
        app.MapServices();
        app.MapGateway();
        // No routes: YARP only keeps the services' replicas and their health (Gateway/UpstreamClusters.cs).
        app.MapReverseProxy();
        app.MapWebPages();
        app.MapTokenPages();
        app.MapAdminPages();
    }

    /// <summary>
    /// Starts listening while <see cref="InitializeAsync"/> runs, then opens the start-up gate. Both
    /// are needed before anything but the health probes is answered.
    /// </summary>
    public static async Task StartAsync(WebApplication app, CancellationToken cancellationToken = default)
    {
        ValidateAllOptions(app.Services);
        // SQLite calls complete synchronously, so initialisation gets its own thread to overlap with Kestrel.
        await Task.WhenAll(Task.Run(() => InitializeAsync(app, cancellationToken), cancellationToken), app.StartAsync(cancellationToken));
        app.Services.GetRequiredService<StartupGate>().Open();
        app.Services.GetRequiredService<ManagedProcesses>().Begin(app.Lifetime.ApplicationStopping);
        _ = Task.Run(() => WarmUpAsync(app.Services), CancellationToken.None);
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
        // Building the EF model is slow when cold; do it while the schema is brought up to date.
        // The start-up steps themselves use plain SQL, so they do not wait for EF's first queries.
        var warmUp = Task.Run(() =>
        {
            using var scope = services.CreateScope();
            _ = scope.ServiceProvider.GetRequiredService<PortcullisDb>().Model;
        }, cancellationToken);
        var database = services.GetRequiredService<IOptions<DatabaseOptions>>().Value;
        try
        {
            await using var connection = OpenRawConnection(services);
            await connection.OpenAsync(cancellationToken);
            await new Migrator(connection, database.IsPostgres, services.GetRequiredService<ILogger<Migrator>>()).MigrateAsync(cancellationToken: cancellationToken);
            if (!database.IsPostgres)
                await Sql.ExecuteAsync(connection, "PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000; PRAGMA synchronous=FULL", cancellationToken);
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
        await warmUp;
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
    private static void ValidateAllOptions(IServiceProvider services)
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

    private static async Task<IResult> ReadyAsync(PortcullisDb db, StartupGate gate, CancellationToken cancellationToken)
    {
        if (!gate.IsOpen)
            return TypedResults.Text("starting", statusCode: StatusCodes.Status503ServiceUnavailable);
        try
        {
            // Plain SQL: readiness asks "does the database answer", and must not wait for EF warm-up.
            var connection = db.Database.GetDbConnection();
            await db.Database.OpenConnectionAsync(cancellationToken);
            if (await Sql.ScalarAsync(connection, "SELECT 1", cancellationToken) is not null)
                return TypedResults.Text("ready");
        }
        catch (Exception e) when (DatabaseFailures.IsDatabaseFailure(e))
        {
        }
        return TypedResults.Text("database unavailable", statusCode: StatusCodes.Status503ServiceUnavailable);
    }

    private static async Task ApiHeaders(HttpContext context, Func<Task> next)
    {
        var headers = context.Response.Headers;
        headers.XContentTypeOptions = "nosniff";
        var path = context.Request.Path;
        if (path.StartsWithSegments("/api") || path.StartsWithSegments("/auth"))
        {
            headers.CacheControl = "no-store";
            // A JSON body in a charset .NET does not know would fail deep in model binding; say so up front.
            if (context.Request.ContentType is { } type && Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(type, out var media)
                && media.Charset.HasValue && !IsKnownCharset(media.Charset.Value))
            {
                await ProblemResponses.WriteAsync(context, StatusCodes.Status415UnsupportedMediaType, "Unsupported media type",
                    $"The charset '{Truncate(media.Charset.Value, 40)}' is not supported. Send UTF-8.");
                return;
            }
            // Management and auth bodies are small; a megabyte is generous and keeps memory bounded.
            if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
                limit.MaxRequestBodySize = 1024 * 1024;
        }
        await next();
    }

    private static bool IsKnownCharset(string charset)
    {
        try
        {
            _ = System.Text.Encoding.GetEncoding(charset.Trim('"'));
            return true;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    private static string Truncate(string s, int max) => s.Length <= max ? s : s[..max] + "…";

    /// <summary>Every unexpected failure becomes a problem document without internals; the database being down is a 503.</summary>
    private static async Task HandleExceptionAsync(HttpContext context)
    {
        var error = context.Features.Get<IExceptionHandlerFeature>()?.Error;
        switch (error)
        {
            case BadHttpRequestException bad:
                await ProblemResponses.WriteAsync(context, bad.StatusCode, bad.StatusCode switch
                {
                    StatusCodes.Status413PayloadTooLarge => "Payload too large",
                    StatusCodes.Status415UnsupportedMediaType => "Unsupported media type",
                    _ => "Bad request",
                }, SafeBadRequestMessage(bad));
                break;
            case InvalidOperationException json when json.Message.StartsWith("Unable to read the request as JSON", StringComparison.Ordinal):
                await ProblemResponses.WriteAsync(context, StatusCodes.Status415UnsupportedMediaType, "Unsupported media type",
                    "Send the body as application/json in UTF-8.");
                break;
            case PasswordHasherBusyException:
                context.Response.Headers.RetryAfter = "5";
                await ProblemResponses.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "Service busy", "Too many logins are being checked right now. Try again in a few seconds.");
                break;
            case { } e when DatabaseFailures.IsDatabaseFailure(e):
                context.Response.Headers.RetryAfter = "5";
                await ProblemResponses.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "Service unavailable", "The database does not answer. Try again shortly.");
                break;
            default:
                await ProblemResponses.WriteAsync(context, StatusCodes.Status500InternalServerError, "Internal error",
                    $"Something went wrong on the server. Quote trace id {context.TraceIdentifier} when reporting it.");
                break;
        }
    }

    private static string SafeBadRequestMessage(BadHttpRequestException e) => e.StatusCode switch
    {
        StatusCodes.Status413PayloadTooLarge => "The request body is too large.",
        StatusCodes.Status415UnsupportedMediaType => "Send the body as application/json.",
        _ => e.InnerException is JsonException or System.Text.DecoderFallbackException
            ? "The body is not valid JSON (or a field has the wrong type)."
            : "The request is malformed.",
    };
}

/// <summary>Counts requests by route pattern (never the raw path, which could carry anything) and status.</summary>
internal sealed class RequestMetricsMiddleware(RequestDelegate next, PrometheusMetrics metrics)
{
    public async Task InvokeAsync(HttpContext context)
    {
        try
        {
            await next(context);
        }
        finally
        {
            var route = (context.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? "unmatched";
            // A group's "/" endpoint reads "/api/v1/me/": the same route as users write it.
            if (route.Length > 1 && route[^1] == '/')
                route = route[..^1];
            metrics.CountRequest(route, context.Response.StatusCode);
        }
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
