using System.Text.Json;
using Microsoft.AspNetCore.HttpOverrides;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.OAuth;
using Portcullis.Compat;
using Portcullis.Data;
using Portcullis.Federation;
using Portcullis.Gateway;
using Portcullis.Notifications;
using Portcullis.ServicePrincipals;
using Portcullis.Tokens;
using Portcullis.Users;
using Portcullis.Web;

namespace Portcullis.Hosting;

/// <summary>
/// <c>portcullis serve</c>: configuration, services and the HTTP pipeline. Reads like a table of
/// contents; each feature's endpoints live in its own folder.
/// </summary>
internal static class ServerApp
{
    public const string DefaultUrl = "http://127.0.0.1:8080";

    /// <summary>Builds the server. <paramref name="configureServices"/> lets tests swap the clock.</summary>
    /// <param name="withPipeline">
    /// False for the commands that only use the server's configuration and services (docs/operations.md): building the
    /// request pipeline makes singletons that open the database, which on SQLite takes the data directory's lock.
    /// </param>
    public static WebApplication Build(string[] args, Action<IServiceCollection>? configureServices = null, bool withPipeline = true)
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

        // Each feature registers its own parts next to its endpoints; this is the table of contents.
        var services = builder.Services;
        services.AddOptions<ServerOptions>().Bind(configuration).ValidateOnStart();
        services.AddSingleton<IValidateOptions<ServerOptions>, ServerOptionsValidator>();
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton(sp => new PublicUrl(ResolvePublicUrl(sp.GetRequiredService<IOptions<ServerOptions>>().Value, configuration)));
        services.AddSingleton<StartupGate>();
        services.AddPortcullisDatabase(configuration);
        services.AddAudit(configuration);
        services.AddTokens(configuration);
        services.AddNotifications(configuration);
        services.AddCredentials(configuration);
        services.AddOidcLogin(configuration);
        services.AddOAuthClients();
        services.AddGateway(configuration);
        services.AddManagedServices(configuration);
        services.AddWebPages(configuration);
        services.AddProblemDetails();
        services.AddOpenApi(OpenApiDocument.Configure);
        services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
            o.SerializerOptions.DictionaryKeyPolicy = null;
        });
        services.AddHealthChecks();
        services.AddMetricsEndpoint(configuration);
        services.AddTelemetry(configuration);
        configureServices?.Invoke(services);

        var app = builder.Build();
        // Before the pipeline: building it makes singletons whose dependencies read their options (the database's
        // context pool reads Database:*), and every configuration problem is to be reported at once, not the first one met.
        Startup.ValidateAllOptions(app.Services);
        if (withPipeline)
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
        Telemetry.AddOpenTelemetryVariables(configuration);
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

    private static void ConfigurePipeline(WebApplication app)
    {
        // Behind a trusted proxy that terminates TLS, X-Forwarded-Proto says the request was HTTPS (cookies then
        // become Secure). Only the scheme is taken here: the connection's address stays the TCP peer's, which the
        // gateway needs, and the client's address is resolved where it is used (ClientAddresses, docs/decisions.md).
        var forwarded = new ForwardedHeadersOptions { ForwardedHeaders = ForwardedHeaders.XForwardedProto, ForwardLimit = 1 };
        forwarded.KnownProxies.Clear();
        forwarded.KnownIPNetworks.Clear();
        foreach (var network in app.Services.GetRequiredService<TrustedProxies>().Networks)
            forwarded.KnownIPNetworks.Add(network);
        app.UseForwardedHeaders(forwarded);
        app.UseExceptionHandler(new ExceptionHandlerOptions { ExceptionHandler = ErrorHandling.HandleExceptionAsync, StatusCodeSelector = null });
        app.UseMetricsListener();
        app.Use(app.Services.GetRequiredService<StartupGate>().Middleware);
        // Forwarded requests go no further than this: nothing of the UI's or the API's middleware applies to them,
        // not even routing (hence the explicit UseRouting after it).
        app.UseMiddleware<GatewayMiddleware>();
        app.UseRouting();
        app.UseStatusCodePages();
        app.Use(ApiHeaders.Middleware);
        app.UseMiddleware<RequestMetricsMiddleware>();
        app.UseWebStaticFiles();
        if (app.Services.GetRequiredService<PublicUrl>().Value.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
            app.Use(Web.WebPages.HttpsForPages);
        app.UseAuthentication();
        app.Use(Web.WebPages.SessionAntiforgery);
        app.UseAuthorization();

        app.MapGet("/healthz", () => TypedResults.Text("ok")).WithTags("Health");
        app.MapGet("/readyz", Startup.ReadyAsync).WithTags("Health");
        app.MapMetrics();
        app.MapOpenApi();

        app.MapOAuth();
        app.MapDaeploy();
        var api = app.MapGroup("/api/v1").RequireAuthorization(Policies.Api);
        api.MapTokens();
        api.MapUsers();
        api.MapAudit();
        api.MapClients();
        api.MapKeys();
        api.MapManagedServices();
        api.MapWebhooks();
        app.MapGroup("/api/v1").MapMe();
        app.MapServices();
        app.MapGateway();
        // No routes: YARP only keeps the services' replicas and their health (Gateway/UpstreamClusters.cs).
        app.MapReverseProxy();
        app.MapWebPages();
        app.MapOidcLogin();
        app.MapTokenPages();
        app.MapTokenLinks();
        app.MapWebhookPages();
        app.MapDevicePages();
        app.MapAdminPages();
    }
}
