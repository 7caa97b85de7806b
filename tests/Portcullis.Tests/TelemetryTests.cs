using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;
using Xunit;

namespace Portcullis.Tests;

/// <summary>docs/operations.md, "Tracing": with OTEL_EXPORTER_OTLP_ENDPOINT set, traces and metrics go there over OTLP.</summary>
public sealed class TelemetryTests : IAsyncLifetime
{
    private OtlpReceiver _collector = null!;
    private TestUpstream _upstream = null!;
    private PortcullisServer _server = null!;

    public async Task InitializeAsync()
    {
        _collector = await OtlpReceiver.StartAsync();
        _upstream = await TestUpstream.StartAsync();
        _server = PortcullisServer.With(Provider.Sqlite, new()
        {
            ["Gateway:Services:0:Name"] = "echo",
            ["Gateway:Services:0:Version"] = "1",
            ["Gateway:Services:0:Upstream"] = _upstream.Url + "/echo",
        });
        _server.ExtraEnvironment["OTEL_EXPORTER_OTLP_ENDPOINT"] = _collector.Url;
        _server.ExtraEnvironment["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf";
        _server.ExtraEnvironment["OTEL_BSP_SCHEDULE_DELAY"] = "100";
        _server.ExtraEnvironment["OTEL_METRIC_EXPORT_INTERVAL"] = "300";
        await _server.InitializeAsync();
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        await _upstream.DisposeAsync();
        await _collector.DisposeAsync();
    }

    [Fact]
    public async Task ARequestThroughTheGatewayIsATraceWhoseUpstreamCallIsAChildSpanAndMetricsGoOverOtlp()
    {
        var traceId = Convert.ToHexStringLower(RandomBytes(16));
        var callerSpanId = Convert.ToHexStringLower(RandomBytes(8));
        using var request = new HttpRequestMessage(HttpMethod.Get, "/services/echo_1/hello");
        request.Headers.Add("traceparent", $"00-{traceId}-{callerSpanId}-01");
        var token = await _server.AdminTokenAsync();
        using var response = await _server.Client(token).SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        // The service was called in the same trace, by a span of Portcullis's own.
        var echoed = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("headers").GetProperty("traceparent").GetString()!;
        var parts = echoed.Split('-');
        Assert.Equal(traceId, parts[1]);
        var upstreamCallSpanId = parts[2];
        Assert.NotEqual(callerSpanId, upstreamCallSpanId);

        // The collector has the request's span (child of the caller's) and the upstream call's span (child of the request's).
        OtlpReceiver.Span? server = null, upstreamCall = null;
        var watch = Stopwatch.StartNew();
        while ((server is null || upstreamCall is null) && watch.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(100);
            var spans = _collector.Spans().Where(s => s.TraceId == traceId).ToList();
            server = spans.FirstOrDefault(s => s.ParentSpanId == callerSpanId);
            upstreamCall = spans.FirstOrDefault(s => s.SpanId == upstreamCallSpanId);
        }
        Assert.True(server is not null, $"no span of the request in the collector; spans: {string.Join(", ", _collector.Spans())}");
        Assert.True(upstreamCall is not null, $"no span of the upstream call; spans: {string.Join(", ", _collector.Spans())}");
        Assert.Equal(server.SpanId, upstreamCall.ParentSpanId);
        Assert.StartsWith("GET", server.Name);

        // Portcullis's metrics are exported too, beside the framework's.
        while (!MetricsContain("portcullis.http.requests") && watch.Elapsed < TimeSpan.FromSeconds(10))
            await Task.Delay(100);
        Assert.True(MetricsContain("portcullis.http.requests"), "portcullis.http.requests never reached the collector");
        Assert.True(MetricsContain("http.server.request.duration"), "the framework's request duration is not exported");
        // No credential leaves with the telemetry.
        foreach (var signal in new[] { "traces", "metrics", "logs" })
            Assert.DoesNotContain(_collector.Bodies(signal), b => b.AsSpan().IndexOf(Encoding.UTF8.GetBytes(token)) >= 0);
        // And /metrics still answers in the Prometheus format.
        Assert.Contains("portcullis_http_requests_total{route=", await _server.Client().GetStringAsync("/metrics"));
    }

    private bool MetricsContain(string name)
    {
        var bytes = Encoding.UTF8.GetBytes(name);
        return _collector.Bodies("metrics").Any(b => b.AsSpan().IndexOf(bytes) >= 0);
    }

    private static byte[] RandomBytes(int n) => System.Security.Cryptography.RandomNumberGenerator.GetBytes(n);
}
