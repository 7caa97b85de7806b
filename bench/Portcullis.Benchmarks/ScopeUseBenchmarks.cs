using System.Globalization;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Portcullis.Security;
using Portcullis.Tokens;

namespace Portcullis.Benchmarks;

/// <summary>
/// What noting a scope's use (for narrowing, docs/token-policies.md) adds to a request an API token makes: parsing the
/// token id and one counter in memory (<see cref="UsageRecorder.RecordScope"/>), over 10,000 tokens in turn.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
[SimpleJob(RunStrategy.Throughput, launchCount: 1, warmupCount: 5, iterationCount: 15)]
public class ScopeUseBenchmarks
{
    private UsageRecorder _usage = null!;
    private string[] _ids = null!;
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        var dbs = new Microsoft.EntityFrameworkCore.Infrastructure.PooledDbContextFactory<Portcullis.Data.PortcullisDb>(
            new DbContextOptionsBuilder<Portcullis.Data.PortcullisDb>().UseSqlite("Data Source=:memory:").Options);
        _usage = new UsageRecorder(dbs, TimeProvider.System, Options.Create(new TokenOptions()), NullLogger<UsageRecorder>.Instance);
        _ids = [.. Enumerable.Range(1, 10_000).Select(i => i.ToString(CultureInfo.InvariantCulture))];
    }

    [Benchmark]
    public void RecordScopeOfApiRequest()
    {
        var i = _next;
        _next = i + 1 == _ids.Length ? 0 : i + 1;
        if (long.TryParse(_ids[i], NumberStyles.None, CultureInfo.InvariantCulture, out var id))
            _usage.RecordScope(id, ScopeRequirement.Api);
    }
}
