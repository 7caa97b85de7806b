using System.Collections.Immutable;
using Microsoft.Extensions.Options;
using Portcullis.Data;

namespace Portcullis.Gateway;

/// <summary>An active health check: <c>GET Path</c> on every replica each <c>Interval</c>.</summary>
internal sealed record HealthCheck(string Path, TimeSpan Interval);

/// <summary>One service behind the gateway (docs/gateway.md): one upstream, or several replicas with the same base path.</summary>
internal sealed record ServiceEntry(string Name, string Version, ImmutableArray<Uri> Upstreams, bool Protected, string? Description, string Source, DateTime RegisteredAt,
    HealthCheck? HealthCheck = null)
{
    public const string FromConfiguration = "configuration";
    public const string FromApi = "api";

    public string Key => $"{Name}_{Version}";

    /// <summary>Whether the credential may use this service: any credential for an unprotected one, else the service's scope.</summary>
    public bool IsReachableBy(Auth.Credential credential) => !Protected || credential.Allows(Security.ScopeRequirement.ForService(Name));

    /// <summary>The host label of this version on its own origin (<see cref="ServiceHosts"/>).</summary>
    public string Label => ServiceHosts.Label(Name, Version);

    public Uri Upstream => Upstreams[0];

    /// <summary>The base path every forwarded path is put under, without a trailing '/' ("" for none); the same for every replica.</summary>
    public string BasePath { get; } = Upstreams[0].AbsolutePath.TrimEnd('/');

    /// <summary>Scheme, authority and base path of each replica, without a trailing '/'.</summary>
    public ImmutableArray<string> UpstreamBases { get; } = [.. Upstreams.Select(u => u.GetLeftPart(UriPartial.Authority) + u.AbsolutePath.TrimEnd('/'))];

    /// <summary>The upstreams as stored and shown: URLs without a trailing '/'.</summary>
    public IEnumerable<string> UpstreamTexts => Upstreams.Select(u => u.ToString().TrimEnd('/'));

    /// <summary>What the entry's YARP cluster is made of: the cluster serves this entry only while its stamp is this.</summary>
    public string ClusterStamp { get; } = string.Join(' ', Upstreams.Select(u => u.ToString().TrimEnd('/')))
        + (HealthCheck is { } check ? $" {check.Path} {check.Interval.TotalSeconds}" : "");
}

/// <summary>
/// Every service the gateway knows, from three sources: <c>Gateway:Services</c>, the API (the
/// <c>gateway_services</c> table), and any other part of Portcullis through <see cref="SetSource"/>
/// (the configured service principals with a <c>url</c>). Lookups read an immutable snapshot, so the
/// request path takes no lock and touches no database; API changes reload it on every instance.
/// </summary>
internal sealed class ServiceRegistry(IOptions<GatewayOptions> options, PlainConnections connections, TimeProvider time, ILogger<ServiceRegistry> logger)
{
    private sealed record Snapshot(
        ImmutableDictionary<string, ServiceEntry> ByKey,
        ImmutableDictionary<string, ServiceEntry> LatestByName,
        ImmutableDictionary<string, ServiceEntry> ByLabel,
        ImmutableArray<ServiceEntry> All);

    private readonly object _gate = new();
    private readonly DateTime _started = time.GetUtcNow().UtcDateTime;
    private ImmutableArray<ServiceEntry> _stored = [];
    private ImmutableDictionary<string, ImmutableArray<ServiceEntry>> _otherSources = ImmutableDictionary<string, ImmutableArray<ServiceEntry>>.Empty;
    private volatile Snapshot _snapshot = Build([]);

    public IReadOnlyList<ServiceEntry> All => _snapshot.All;

    /// <summary>The services the credential may use (<see cref="ServiceEntry.IsReachableBy"/>).</summary>
    public IEnumerable<ServiceEntry> ReachableBy(Auth.Credential credential) => _snapshot.All.Where(s => s.IsReachableBy(credential));

    /// <summary>A <c>{name}_{version}</c> or bare <c>{name}</c> path segment: the exact version, or the newest.</summary>
    public ServiceEntry? Find(string target)
    {
        var snapshot = _snapshot;
        return target.Contains('_')
            ? snapshot.ByKey.GetValueOrDefault(target)
            : snapshot.LatestByName.GetValueOrDefault(target);
    }

    public ServiceEntry? Find(string name, string version) => _snapshot.ByKey.GetValueOrDefault($"{name}_{version}");

    /// <summary>A service origin's host label: <c>model</c> (the newest version) or <c>model--1-0</c>.</summary>
    public ServiceEntry? FindByLabel(string label)
    {
        var snapshot = _snapshot;
        return snapshot.LatestByName.GetValueOrDefault(label) ?? snapshot.ByLabel.GetValueOrDefault(label);
    }

    /// <summary>Whether a new version's host label would be taken already (by a version, or by a name).</summary>
    public ServiceEntry? LabelTakenBy(string name, string version)
    {
        var label = ServiceHosts.Label(name, version);
        var snapshot = _snapshot;
        return snapshot.ByLabel.GetValueOrDefault(label) ?? snapshot.LatestByName.GetValueOrDefault(label)
            ?? snapshot.All.FirstOrDefault(e => e.Name != name && ServiceHosts.Label(e.Name, e.Version) == name);
    }

    /// <summary>Raised after every change of the services, on the thread that made it.</summary>
    public event Action? Changed;

    /// <summary>Replaces the entries another part of Portcullis contributes (e.g. <c>services</c> for configured principals).</summary>
    public void SetSource(string source, IEnumerable<ServiceEntry> entries)
    {
        lock (_gate)
        {
            _otherSources = _otherSources.SetItem(source, [.. entries]);
            Publish();
        }
    }

    /// <summary>
    /// Reads the API-registered services; called at start and whenever any instance changes them. Plain SQL on a plain
    /// connection (Data/PlainConnections.cs): readiness waits for it, and it must not wait for EF Core's model.
    /// </summary>
    public async Task ReloadAsync(CancellationToken cancellationToken)
    {
        try
        {
            await using var connection = await connections.OpenAsync(cancellationToken);
            await using var command = Sql.Command(connection, """
                SELECT name, version, upstream, protected, description, created_at, health_check_path, health_check_interval_seconds
                FROM gateway_services ORDER BY created_at, id
                """);
            await using var reader = await command.ExecuteReaderAsync(cancellationToken);
            var rows = new List<ServiceEntry>();
            while (await reader.ReadAsync(cancellationToken))
            {
                // Replicas are stored one per line.
                var upstreams = new List<Uri>();
                foreach (var text in reader.GetString(2).Split('\n', StringSplitOptions.RemoveEmptyEntries))
                {
                    if (ServiceRules.TryParseUpstream(text, out var upstream))
                        upstreams.Add(upstream);
                }
                if (upstreams.Count == 0)
                    continue;
                var health = reader.IsDBNull(6) ? null : new HealthCheck(reader.GetString(6), TimeSpan.FromSeconds(reader.IsDBNull(7) ? 10 : reader.GetInt32(7)));
                rows.Add(new ServiceEntry(reader.GetString(0), reader.GetString(1), [.. upstreams], reader.GetBoolean(3), reader.IsDBNull(4) ? null : reader.GetString(4),
                    ServiceEntry.FromApi, Sql.Utc(reader, 5), health));
            }
            lock (_gate)
            {
                _stored = [.. rows];
                Publish();
            }
        }
        catch (Exception e) when (DatabaseFailures.IsDatabaseFailure(e))
        {
            // Keep serving what is known; the next change or restart reads them again.
            logger.LogWarning("Could not read the registered services: {Error}", e.Message);
        }
    }

    private void Publish()
    {
        var configured = options.Value.Services.Select((s, i) => new ServiceEntry(s.Name!, s.Version!, [.. s.AllUpstreams.Select(u => new Uri(u!))],
            s.Protected, s.Description, ServiceEntry.FromConfiguration, _started.AddTicks(i),
            s.HealthCheck?.Path is { } path ? new HealthCheck(path, s.HealthCheck.Interval) : null));
        // Configuration first, then the others, then the API: a later source does not replace an existing name_version.
        _snapshot = Build([.. configured, .. _otherSources.Values.SelectMany(v => v), .. _stored]);
        Changed?.Invoke();
    }

    private static Snapshot Build(IReadOnlyList<ServiceEntry> entries)
    {
        var byKey = ImmutableDictionary.CreateBuilder<string, ServiceEntry>(StringComparer.Ordinal);
        var latest = ImmutableDictionary.CreateBuilder<string, ServiceEntry>(StringComparer.Ordinal);
        var byLabel = ImmutableDictionary.CreateBuilder<string, ServiceEntry>(StringComparer.Ordinal);
        foreach (var e in entries)
        {
            if (byKey.ContainsKey(e.Key))
                continue;
            byKey[e.Key] = e;
            byLabel.TryAdd(e.Label, e);
            if (!latest.TryGetValue(e.Name, out var current) || e.RegisteredAt >= current.RegisteredAt)
                latest[e.Name] = e;
        }
        return new Snapshot(byKey.ToImmutable(), latest.ToImmutable(), byLabel.ToImmutable(),
            [.. byKey.Values.OrderBy(e => e.Name, StringComparer.Ordinal).ThenBy(e => e.RegisteredAt)]);
    }
}
