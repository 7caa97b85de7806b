using System.Collections;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Portcullis.Hosting;

/// <summary>
/// Metrics and traces through OpenTelemetry (docs/operations.md, "Metrics" and "Tracing"). Portcullis's instruments
/// (<see cref="PortcullisMetrics"/>) are always exported at <c>/metrics</c> in the Prometheus format. When
/// <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is set, traces (each request, and each gateway upstream call as its child span)
/// and metrics (Portcullis's and the framework's HTTP metrics) also go there over OTLP, configured by the standard
/// <c>OTEL_*</c> variables. Without it nothing listens to request activities, so a request costs no span.
/// </summary>
internal static class Telemetry
{
    public const string OtlpEndpointVariable = "OTEL_EXPORTER_OTLP_ENDPOINT";

    /// <summary>
    /// The standard <c>OTEL_*</c> variables as configuration keys, unprefixed, where OpenTelemetry's options read them:
    /// the server's configuration otherwise holds only <c>PORTCULLIS_*</c> variables.
    /// </summary>
    public static void AddOpenTelemetryVariables(IConfigurationBuilder configuration)
    {
        var variables = Environment.GetEnvironmentVariables().Cast<DictionaryEntry>()
            .Where(e => e.Key is string key && key.StartsWith("OTEL_", StringComparison.Ordinal))
            .Select(e => new KeyValuePair<string, string?>((string)e.Key, e.Value as string));
        configuration.AddInMemoryCollection(variables);
    }

    public static IServiceCollection AddTelemetry(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSingleton<PortcullisMetrics>();
        var otlp = !string.IsNullOrWhiteSpace(configuration[OtlpEndpointVariable]);
        services.AddSingleton(new Tracing(otlp));
        var telemetry = services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("portcullis", serviceVersion: typeof(Telemetry).Assembly.GetName().Version?.ToString()))
            .WithMetrics(metrics =>
            {
                metrics.AddMeter(PortcullisMetrics.MeterName);
                // No scope label: the series are named as they were before OpenTelemetry, so dashboards and alerts keep working.
                metrics.AddPrometheusExporter(o => (o.ScrapeResponseCacheDurationMilliseconds, o.ScopeInfoEnabled) = (0, false));
                if (otlp)
                    metrics.AddAspNetCoreInstrumentation().AddHttpClientInstrumentation();
            });
        if (otlp)
        {
            // YARP sends upstream requests through SocketsHttpHandler, whose activities the HttpClient instrumentation
            // records: each forwarded request is a child span of the request that carried it, with the trace context
            // passed on to the service in 'traceparent'.
            // Two kinds of URL carry a secret in their path and stay out of traces: a one-time link (/claim/{secret}: its
            // path is replaced by the route) and a webhook's receiver (some put their secret in the path: not traced).
            telemetry.WithTracing(tracing => tracing
                    .AddAspNetCoreInstrumentation(o => o.EnrichWithHttpRequest = (activity, request) =>
                    {
                        if (request.Path.StartsWithSegments(Tokens.TokenLinks.ClaimPath))
                            activity.SetTag("url.path", Tokens.TokenLinks.ClaimPath + "/{secret}");
                    })
                    .AddHttpClientInstrumentation(o => o.FilterHttpRequestMessage = request => !request.Headers.Contains(Notifications.WebhookDispatcher.DeliveryHeader)))
                .UseOtlpExporter();
        }
        return services;
    }
}

/// <summary>Whether requests are traced (an OTLP endpoint is configured): the gateway then passes each upstream call's span on.</summary>
internal sealed record Tracing(bool IsOn);
