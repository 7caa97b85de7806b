using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Options;

namespace Portcullis.Hosting;

/// <summary>Configuration section <c>Metrics</c>: who may read <c>/metrics</c>, and where (docs/configuration.md).</summary>
internal sealed class MetricsOptions
{
    public const string Section = "Metrics";

    /// <summary>When set, <c>/metrics</c> answers only <c>Authorization: Bearer</c> with this value (Prometheus' <c>authorization</c> setting).</summary>
    public string? BearerToken { get; set; }

    /// <summary>
    /// When set (e.g. <c>http://127.0.0.1:9464</c>), <c>/metrics</c> is served only on this extra address, and that
    /// address serves nothing but <c>/metrics</c>, <c>/healthz</c> and <c>/readyz</c>.
    /// </summary>
    public string? ListenUrl { get; set; }

    public int? ListenPort => ListenUrl is { } url && Uri.TryCreate(url, UriKind.Absolute, out var uri) ? uri.Port : null;
}

internal sealed class MetricsOptionsValidator : IValidateOptions<MetricsOptions>
{
    public ValidateOptionsResult Validate(string? name, MetricsOptions o)
    {
        var errors = new List<string>();
        if (o.BearerToken is { } token && (token.Length < 32 || token.Any(c => char.IsWhiteSpace(c) || char.IsControl(c))))
            errors.Add("Metrics:BearerToken must be at least 32 characters without spaces, e.g. from 'openssl rand -hex 32'.");
        if (o.ListenUrl is { } url && (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme != "http" || uri.AbsolutePath != "/"
            || !url.Contains(":" + uri.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal)))
            errors.Add($"Metrics:ListenUrl is '{url}'. Give an http URL with a port and no path, e.g. 'http://127.0.0.1:9464'.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

internal static class MetricsEndpoint
{
    private static readonly string[] ProbePaths = ["/metrics", "/healthz", "/readyz"];

    public static IServiceCollection AddMetricsEndpoint(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSingleton<IValidateOptions<MetricsOptions>, MetricsOptionsValidator>();
        services.AddOptions<MetricsOptions>().Bind(configuration.GetSection(MetricsOptions.Section)).ValidateOnStart();
        return services;
    }

    /// <summary>The metrics address, when there is one, serves the probes and nothing else.</summary>
    public static IApplicationBuilder UseMetricsListener(this IApplicationBuilder app)
    {
        if (app.ApplicationServices.GetRequiredService<IOptions<MetricsOptions>>().Value.ListenPort is not { } port)
            return app;
        return app.Use((http, next) => http.Connection.LocalPort == port && !ProbePaths.Contains(http.Request.Path.Value, StringComparer.Ordinal)
            ? ProblemResponses.WriteAsync(http, StatusCodes.Status404NotFound, "Not found", "This address serves /metrics, /healthz and /readyz only.")
            : next());
    }

    /// <summary>
    /// <c>GET /metrics</c>: this handler decides who may read it and refreshes the active-token count; OpenTelemetry's
    /// Prometheus exporter writes the answer (text format 0.0.4, or OpenMetrics when the scraper asks for it).
    /// </summary>
    public static IEndpointRouteBuilder MapMetrics(this IEndpointRouteBuilder app)
    {
        var export = app.CreateApplicationBuilder()
            .UseOpenTelemetryPrometheusScrapingEndpoint(meterProvider: null, predicate: _ => true, path: null, configureBranchedPipeline: null, optionsName: null)
            .Build();
        app.MapGet("/metrics", (HttpContext http, PortcullisMetrics metrics, IOptions<MetricsOptions> options) => ScrapeAsync(http, metrics, options.Value, export))
            .Produces(StatusCodes.Status200OK, contentType: "text/plain")
            .WithTags("Health");
        return app;
    }

    private static async Task ScrapeAsync(HttpContext http, PortcullisMetrics metrics, MetricsOptions o, RequestDelegate export)
    {
        if (o.ListenPort is { } port && http.Connection.LocalPort != port)
        {
            await ProblemResponses.WriteAsync(http, StatusCodes.Status404NotFound, "Not found", $"Metrics are served on {o.ListenUrl} (Metrics:ListenUrl).");
            return;
        }
        if (o.BearerToken is { } expected && !Presents(http, expected))
        {
            http.Response.Headers.WWWAuthenticate = "Bearer realm=\"portcullis-metrics\"";
            await ProblemResponses.WriteAsync(http, StatusCodes.Status401Unauthorized, "Unauthorized", "Send the metrics token (Metrics:BearerToken) as 'Authorization: Bearer <token>'.");
            return;
        }
        await metrics.RefreshActiveTokensAsync(http.RequestAborted);
        await export(http);
    }

    /// <summary>Compared as SHA-256 digests, in constant time, so that neither length nor content leaks through timing.</summary>
    private static bool Presents(HttpContext http, string expected)
    {
        var header = http.Request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            return false;
        return CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(header[7..].Trim())), SHA256.HashData(Encoding.UTF8.GetBytes(expected)));
    }
}
