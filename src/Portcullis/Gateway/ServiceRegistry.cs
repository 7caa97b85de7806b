using System.Collections.Immutable;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Data;

namespace Portcullis.Gateway;

/// <summary>One service behind the gateway (SPEC §5).</summary>
internal sealed record ServiceEntry(string Name, string Version, Uri Upstream, bool Protected, string? Description, string Source, DateTime RegisteredAt)
{
    public const string FromConfiguration = "configuration";
    public const string FromApi = "api";

    public string Key => $"{Name}_{Version}";

    /// <summary>Scheme, authority and base path of the upstream, without a trailing '/': what every forwarded path is appended to.</summary>
    public string UpstreamBase { get; } = Upstream.GetLeftPart(UriPartial.Authority) + Upstream.AbsolutePath.TrimEnd('/');
}

/// <summary>
/// Every service the gateway knows, from three sources: <c>Gateway:Services</c>, the API (the
/// <c>gateway_services</c> table), and any other part of Portcullis through <see cref="SetSource"/>
/// (the configured service principals with a <c>url</c>). Lookups read an immutable snapshot, so the
/// request path takes no lock and touches no database; API changes reload it on every instance.
/// </summary>
internal sealed class ServiceRegistry(IOptions<GatewayOptions> options, IServiceScopeFactory scopes, TimeProvider time, ILogger<ServiceRegistry> logger)
{
    private sealed record Snapshot(
        ImmutableDictionary<string, ServiceEntry> ByKey,
        ImmutableDictionary<string, ServiceEntry> LatestByName,
        ImmutableArray<ServiceEntry> All);

    private readonly object _gate = new();
    private readonly DateTime _started = time.GetUtcNow().UtcDateTime;
    private ImmutableArray<ServiceEntry> _stored = [];
    private ImmutableDictionary<string, ImmutableArray<ServiceEntry>> _otherSources = ImmutableDictionary<string, ImmutableArray<ServiceEntry>>.Empty;
    private volatile Snapshot _snapshot = Build([]);

    public IReadOnlyList<ServiceEntry> All => _snapshot.All;

    /// <summary>A <c>{name}_{version}</c> or bare <c>{name}</c> path segment: the exact version, or the newest.</summary>
    public ServiceEntry? Find(string target)
    {
        var snapshot = _snapshot;
        return target.Contains('_')
            ? snapshot.ByKey.GetValueOrDefault(target)
            : snapshot.LatestByName.GetValueOrDefault(target);
    }

    public ServiceEntry? Find(string name, string version) => _snapshot.ByKey.GetValueOrDefault($"{name}_{version}");

    /// <summary>Replaces the entries another part of Portcullis contributes (e.g. <c>services</c> for configured principals).</summary>
    public void SetSource(string source, IEnumerable<ServiceEntry> entries)
    {
        lock (_gate)
        {
            _otherSources = _otherSources.SetItem(source, [.. entries]);
            Publish();
        }
    }

    /// <summary>Reads the API-registered services; called at start and whenever any instance changes them.</summary>
    public async Task ReloadAsync(CancellationToken cancellationToken)
    {
        try
        {
            await using var scope = scopes.CreateAsyncScope();
            var db = scope.ServiceProvider.GetRequiredService<PortcullisDb>();
            await db.Database.OpenConnectionAsync(cancellationToken);
            var rows = new List<ServiceEntry>();
            await using (var cmd = Sql.Command(db.Database.GetDbConnection(),
                "SELECT name, version, upstream, protected, description, created_at FROM gateway_services ORDER BY created_at, id"))
            await using (var reader = await cmd.ExecuteReaderAsync(cancellationToken))
            {
                while (await reader.ReadAsync(cancellationToken))
                {
                    if (!ServiceRules.TryParseUpstream(reader.GetString(2), out var upstream))
                        continue;
                    rows.Add(new ServiceEntry(reader.GetString(0), reader.GetString(1), upstream, reader.GetBoolean(3),
                        reader.IsDBNull(4) ? null : reader.GetString(4), ServiceEntry.FromApi, Sql.Utc(reader, 5)));
                }
            }
            lock (_gate)
            {
                _stored = [.. rows];
                Publish();
            }
        }
        catch (Exception e) when (Auth.CredentialVerifier.IsDatabaseFailure(e))
        {
            // Keep serving what is known; the next change or restart reads them again.
            logger.LogWarning("Could not read the registered services: {Error}", e.Message);
        }
    }

    private void Publish()
    {
        var configured = options.Value.Services.Select((s, i) => new ServiceEntry(s.Name!, s.Version!, new Uri(s.Upstream!), s.Protected, s.Description,
            ServiceEntry.FromConfiguration, _started.AddTicks(i)));
        // Configuration first, then the others, then the API: a later source does not replace an existing name_version.
        _snapshot = Build([.. configured, .. _otherSources.Values.SelectMany(v => v), .. _stored]);
    }

    private static Snapshot Build(IReadOnlyList<ServiceEntry> entries)
    {
        var byKey = ImmutableDictionary.CreateBuilder<string, ServiceEntry>(StringComparer.Ordinal);
        var latest = ImmutableDictionary.CreateBuilder<string, ServiceEntry>(StringComparer.Ordinal);
        foreach (var e in entries)
        {
            if (byKey.ContainsKey(e.Key))
                continue;
            byKey[e.Key] = e;
            if (!latest.TryGetValue(e.Name, out var current) || e.RegisteredAt >= current.RegisteredAt)
                latest[e.Name] = e;
        }
        return new Snapshot(byKey.ToImmutable(), latest.ToImmutable(),
            [.. byKey.Values.OrderBy(e => e.Name, StringComparer.Ordinal).ThenBy(e => e.RegisteredAt)]);
    }
}
