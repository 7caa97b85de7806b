using Portcullis.Gateway;

namespace Portcullis.Web;

/// <summary>A service as a person sees it: what it is and where it opens (its own origin).</summary>
public sealed record ServiceLink(string Name, string Version, string? Description, string Url)
{
    internal static ServiceLink From(ServiceEntry service, ServiceHosts hosts) =>
        new(service.Name, service.Version, service.Description, hosts.Origin(service.Label) + "/");

    internal static List<ServiceLink> For(IEnumerable<ServiceEntry> services, ServiceHosts hosts) => services.Select(s => From(s, hosts)).ToList();
}

/// <summary>A service as an administrator manages it: its upstreams and their health, and where it was registered.</summary>
public sealed record ServiceRow(ServiceLink Link, string Key, bool Protected, string Source, bool Removable, IReadOnlyList<DestinationResponse> Upstreams,
    string? HealthCheck)
{
    internal static ServiceRow From(ServiceEntry service, ServiceHosts hosts, Replicas replicas) =>
        new(ServiceLink.From(service, hosts), service.Key, service.Protected, service.Source, service.Source == ServiceEntry.FromApi, replicas.Health(service),
            service.HealthCheck is { } check ? $"GET {check.Path} every {check.Interval.TotalSeconds:0} s" : null);
}
