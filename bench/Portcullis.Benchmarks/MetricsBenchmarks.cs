using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using BenchmarkDotNet.Attributes;
using OpenTelemetry;
using OpenTelemetry.Metrics;

namespace Portcullis.Benchmarks;

/// <summary>
/// What counting one request costs (route and status, as every request is counted): a System.Diagnostics.Metrics
/// counter read by OpenTelemetry's SDK (what Portcullis uses) against the dictionary of counters Portcullis kept by
/// hand before (the baseline; docs/performance.md has the figures).
/// </summary>
[MemoryDiagnoser]
public class MetricsBenchmarks
{
    private readonly ConcurrentDictionary<(string Route, int Status), long> _requests = new();
    private Meter _meter = null!;
    private Counter<long> _counter = null!;
    private MeterProvider _provider = null!;

    [GlobalSetup]
    public void Setup()
    {
        _meter = new Meter("Portcullis.Benchmarks");
        _counter = _meter.CreateCounter<long>("portcullis.http.requests");
        _provider = Sdk.CreateMeterProviderBuilder().AddMeter(_meter.Name).AddReader(new BaseExportingMetricReader(new NullExporter())).Build();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _provider.Dispose();
        _meter.Dispose();
    }

    [Benchmark(Baseline = true)]
    public void HandWrittenDictionary() => _requests.AddOrUpdate(("/api/v1/me", 200), 1, static (_, n) => n + 1);

    [Benchmark]
    public void OpenTelemetryCounter() =>
        _counter.Add(1, new KeyValuePair<string, object?>("route", "/api/v1/me"), new KeyValuePair<string, object?>("status", Hosting.PortcullisMetrics.Boxed(200)));
}

/// <summary>A reader needs an exporter; the measurement is the aggregation on the request path, not the export.</summary>
internal sealed class NullExporter : BaseExporter<Metric>
{
    public override ExportResult Export(in Batch<Metric> batch) => ExportResult.Success;
}
