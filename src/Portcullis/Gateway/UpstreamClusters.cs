using System.Globalization;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;
using Yarp.ReverseProxy;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Health;
using Yarp.ReverseProxy.Model;

namespace Portcullis.Gateway;

/// <summary>
/// The services' replicas as YARP clusters (one per <c>name_version</c>, no routes): YARP keeps their health —
/// active probes where a service has a health check, passive failure tracking where it has replicas — and
/// the gateway picks among the healthy ones. See docs/decisions.md ("Gateway on YARP").
/// </summary>
internal sealed class UpstreamClusters : IProxyConfigProvider
{
    private readonly ServiceRegistry _registry;
    private readonly GatewayOptions _options;
    private volatile Snapshot _snapshot;

    public UpstreamClusters(ServiceRegistry registry, IOptions<GatewayOptions> options)
    {
        _registry = registry;
        _options = options.Value;
        _snapshot = Build();
        registry.Changed += () =>
        {
            var previous = _snapshot;
            _snapshot = Build();
            previous.Changed.Cancel();
        };
    }

    public IProxyConfig GetConfig() => _snapshot;

    private Snapshot Build() => new([.. _registry.All.Select(ToCluster)]);

    private ClusterConfig ToCluster(ServiceEntry service)
    {
        var replicas = service.Upstreams.Length > 1;
        return new ClusterConfig
        {
            ClusterId = service.Key,
            Destinations = service.UpstreamBases.Select((address, i) => (address, i))
                .ToDictionary(d => "r" + d.i.ToString(CultureInfo.InvariantCulture), d => new DestinationConfig { Address = d.address }),
            HealthCheck = new HealthCheckConfig
            {
                Active = service.HealthCheck is { } check
                    ? new ActiveHealthCheckConfig
                    {
                        Enabled = true,
                        Interval = check.Interval,
                        Timeout = TimeSpan.FromSeconds(Math.Min(5, check.Interval.TotalSeconds)),
                        Policy = HealthCheckConstants.ActivePolicy.ConsecutiveFailures,
                        // The destination's address already holds the base path; the probe goes to base + Path.
                        Path = check.Path,
                    }
                    : null,
                // One upstream is tried on every request (a failure is a 502 naming it); replicas that fail are left out for a while.
                Passive = replicas
                    ? new PassiveHealthCheckConfig { Enabled = true, Policy = HealthCheckConstants.PassivePolicy.TransportFailureRate, ReactivationPeriod = _options.ReactivationPeriod }
                    : null,
                AvailableDestinationsPolicy = HealthCheckConstants.AvailableDestinations.HealthyAndUnknown,
            },
            // Which entry a cluster was made from: requests use it only once YARP has applied that very entry.
            Metadata = new Dictionary<string, string> { [StampKey] = service.ClusterStamp },
        };
    }

    internal const string StampKey = "portcullis.entry";



    private sealed class Snapshot : IProxyConfig
    {
        public Snapshot(IReadOnlyList<ClusterConfig> clusters)
        {
            Clusters = clusters;
            ChangeToken = new CancellationChangeToken(Changed.Token);
        }

        public CancellationTokenSource Changed { get; } = new();
        public IReadOnlyList<RouteConfig> Routes { get; } = [];
        public IReadOnlyList<ClusterConfig> Clusters { get; }
        public IChangeToken ChangeToken { get; }
    }
}

/// <summary>
/// The replicas of a service as YARP sees them right now: which are healthy, which one takes the next request,
/// and how each request went (for the passive health check).
/// </summary>
internal sealed class Replicas(IProxyStateLookup state, IEnumerable<IPassiveHealthCheckPolicy> passivePolicies)
{
    private readonly Dictionary<string, IPassiveHealthCheckPolicy> _passivePolicies = passivePolicies.ToDictionary(p => p.Name, StringComparer.OrdinalIgnoreCase);
    private readonly ConditionalWeakTable<DestinationState, StrongBox<int>> _inFlight = new();

    /// <summary>The cluster YARP made from exactly this entry, or null while a change is being applied.</summary>
    public ClusterState? ClusterOf(ServiceEntry service) =>
        state.TryGetCluster(service.Key, out var cluster) && cluster.Model.Config.Metadata is { } metadata
        && metadata.TryGetValue(UpstreamClusters.StampKey, out var stamp) && stamp == service.ClusterStamp ? cluster : null;

    /// <summary>
    /// One healthy replica, chosen by the power of two choices (two at random, the one with fewer requests in
    /// flight), as YARP's <c>PowerOfTwoChoices</c> policy does; <paramref name="except"/> is left out (a retry).
    /// </summary>
    public DestinationState? Pick(ClusterState cluster, DestinationState? except)
    {
        var available = cluster.DestinationsState.AvailableDestinations;
        if (except is not null)
            available = [.. available.Where(d => d != except)];
        var count = available.Count;
        if (count <= 1)
            return count == 0 ? null : available[0];
        var first = Random.Shared.Next(count);
        var second = Random.Shared.Next(count - 1);
        if (second >= first)
            second++;
        var a = available[first];
        var b = available[second];
        return InFlight(a).Value <= InFlight(b).Value ? a : b;
    }

    /// <summary>
    /// Requests in flight per replica. YARP's own counter can only be changed atomically by YARP's pipeline, which
    /// direct forwarding does not run, so the gateway keeps its own.
    /// </summary>
    public StrongBox<int> InFlight(DestinationState destination) => _inFlight.GetValue(destination, _ => new StrongBox<int>());

    /// <summary>Each replica's health, as the admin sees it in the API, the CLI and the UI.</summary>
    public DestinationResponse[] Health(ServiceEntry service)
    {
        var cluster = ClusterOf(service);
        return [.. service.UpstreamTexts.Select((address, i) =>
        {
            if (cluster is null || !cluster.Destinations.TryGetValue("r" + i.ToString(CultureInfo.InvariantCulture), out var destination))
                return new DestinationResponse(address, "unknown");
            var (active, passive) = (destination.Health.Active, destination.Health.Passive);
            var health = active == DestinationHealth.Unhealthy || passive == DestinationHealth.Unhealthy ? "unhealthy"
                : active == DestinationHealth.Healthy || passive == DestinationHealth.Healthy ? "healthy" : "unknown";
            return new DestinationResponse(address, health);
        })];
    }

    /// <summary>Tells YARP's passive health check how a request to a replica went (failures are read from the request's forwarder error).</summary>
    public void Report(HttpContext http, ClusterState cluster, DestinationState destination)
    {
        if (cluster.Model.Config.HealthCheck?.Passive is { Enabled: true } passive && _passivePolicies.TryGetValue(passive.Policy!, out var policy))
            policy.RequestProxied(http, cluster, destination);
    }

}

internal static class GatewayServiceCollectionExtensions
{
    /// <summary>The gateway's parts: its options, YARP's forwarder and health checks over the service registry.</summary>
    public static IServiceCollection AddGateway(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<GatewayOptions>().Bind(configuration.GetSection(GatewayOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<GatewayOptions>, GatewayOptionsValidator>();
        services.AddSingleton<TrustedProxies>();
        services.AddSingleton<ServiceRegistry>();
        services.AddSingleton<ServiceHosts>();
        services.AddSingleton<ServiceOrigins>();
        services.AddSingleton<UpstreamClusters>();
        services.AddSingleton<Replicas>();
        services.AddSingleton<GatewayForwarder>();
        services.AddSingleton<ForwardAuth>();
        services.AddSingleton<LiveForwards>();
        services.AddHostedService(sp => sp.GetRequiredService<LiveForwards>());
        services.AddReverseProxy();
        services.AddSingleton<IProxyConfigProvider>(sp => sp.GetRequiredService<UpstreamClusters>());
        // A replica whose requests fail (at least 5 in 10 s, 30 % of them) is left out for Gateway:ReactivationPeriod.
        services.Configure<TransportFailureRateHealthPolicyOptions>(o =>
        {
            o.DetectionWindowSize = TimeSpan.FromSeconds(10);
            o.MinimalTotalCountThreshold = 5;
            o.DefaultFailureRateLimit = 0.3;
        });
        return services;
    }
}
