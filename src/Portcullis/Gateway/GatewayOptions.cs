using System.Net;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;

namespace Portcullis.Gateway;

/// <summary>Configuration section <c>Gateway</c>: the services from configuration, trusted proxies, timeouts.</summary>
internal sealed class GatewayOptions
{
    public const string Section = "Gateway";

    /// <summary>Services known from configuration (docs/gateway.md). More can be added through the API.</summary>
    public List<ServiceConfig> Services { get; set; } = [];

    /// <summary>
    /// Addresses (or CIDR ranges) whose <c>X-Original-URI</c>, <c>X-Forwarded-Uri</c> and <c>X-Forwarded-For</c>
    /// are believed. Empty (the default) means loopback only.
    /// </summary>
    public List<string> TrustedProxies { get; set; } = [];

    public static readonly string[] LoopbackProxies = ["127.0.0.0/8", "::1/128"];

    /// <summary>How long an upstream may take to send its response headers before the caller gets 504.</summary>
    public TimeSpan UpstreamTimeout { get; set; } = TimeSpan.FromSeconds(100);

    /// <summary>How long connecting to an upstream may take before the caller gets 504.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The host of a service's own origin, for browsers: <c>{service}</c> followed by a domain, e.g.
    /// <c>{service}.svc.example.com</c> (wildcard DNS and certificate). The scheme and port are <c>PublicUrl</c>'s.
    /// </summary>
    public string ServiceHost { get; set; } = ServiceHosts.DefaultPattern;

    /// <summary>
    /// Where <c>/auth/verify</c> reads the service a request is for: <c>query</c> (<c>?service=NAME</c>, set in the
    /// proxy's configuration), <c>X-Original-URI</c> or <c>X-Forwarded-Uri</c> (a path under <c>/services/</c>, only from
    /// a trusted proxy). <c>X-Forwarded-Host</c> matching <see cref="ServiceHost"/> selects a service in every mode.
    /// </summary>
    public string ForwardAuthSource { get; set; } = ForwardAuthSources.Query;

    /// <summary>How long a replica that failed requests is left out before it is tried again.</summary>
    public TimeSpan ReactivationPeriod { get; set; } = TimeSpan.FromSeconds(30);
}

internal static class ForwardAuthSources
{
    public const string Query = "query";
    public const string OriginalUri = "X-Original-URI";
    public const string ForwardedUri = "X-Forwarded-Uri";

    public static readonly string[] All = [Query, OriginalUri, ForwardedUri];
}

internal sealed class ServiceConfig
{
    public string? Name { get; set; }
    public string? Version { get; set; }
    public string? Upstream { get; set; }

    /// <summary>Several replicas of the service, load-balanced; instead of <see cref="Upstream"/>.</summary>
    public List<string> Upstreams { get; set; } = [];

    public bool Protected { get; set; } = true;
    public string? Description { get; set; }
    public ServiceHealthCheckConfig? HealthCheck { get; set; }

    public IReadOnlyList<string> AllUpstreams => Upstreams.Count > 0 ? Upstreams : Upstream is null ? [] : [Upstream];
}

/// <summary>An active health check of a service's replicas: <c>GET Path</c> every <c>Interval</c>; a 2xx is healthy.</summary>
internal sealed class ServiceHealthCheckConfig
{
    public string? Path { get; set; }
    public TimeSpan Interval { get; set; } = TimeSpan.FromSeconds(10);
}

/// <summary>The rules of docs/gateway.md for a registry entry, shared by configuration and the API.</summary>
internal static partial class ServiceRules
{
    [GeneratedRegex("^[a-z0-9-]{1,64}$")]
    public static partial Regex Name();

    [GeneratedRegex("^[A-Za-z0-9.-]{1,64}$")]
    public static partial Regex Version();

    /// <summary>At most this many replicas per service.</summary>
    public const int MaxUpstreams = 32;

    /// <summary>Checks one entry; returns what is wrong with each field, phrased with the fix.</summary>
    public static IEnumerable<(string Field, string Error)> Check(string? name, string? version, IReadOnlyList<string?> upstreams, string? healthPath = null, TimeSpan? healthInterval = null)
    {
        if (name is null || !Name().IsMatch(name))
            yield return ("name", $"The name '{name}' is not valid: use 1 to 64 lowercase letters, digits and '-', e.g. 'model-server'.");
        if (version is null || !Version().IsMatch(version))
            yield return ("version", $"The version '{version}' is not valid: use 1 to 64 letters, digits, '.' and '-', e.g. '1.0.2'.");
        if (upstreams.Count == 0)
            yield return ("upstream", "No upstream is given: set 'upstream' to the service's URL, e.g. 'http://127.0.0.1:5000', or 'upstreams' to the URLs of its replicas.");
        if (upstreams.Count > MaxUpstreams)
            yield return ("upstreams", $"{upstreams.Count} upstreams are given; at most {MaxUpstreams} are allowed.");
        foreach (var upstream in upstreams)
        {
            if (!TryParseUpstream(upstream, out _))
                yield return ("upstream", $"The upstream '{upstream}' is not valid: use an absolute http or https URL without query or fragment, e.g. 'http://127.0.0.1:5000' or 'http://host:5000/base'.");
        }
        if (upstreams.Count > 1 && upstreams.Select(u => TryParseUpstream(u, out var uri) ? uri.AbsolutePath.TrimEnd('/') : u).Distinct().Count() > 1)
            yield return ("upstreams", "The replicas have different base paths; give every replica the same path, e.g. 'http://a:5000/app' and 'http://b:5000/app'.");
        if (healthPath is not null && (healthPath.Length == 0 || healthPath[0] != '/' || healthPath.Length > 200 || healthPath.Any(c => char.IsControl(c) || c is ' ' or '#')))
            yield return ("health_check", $"The health check path '{healthPath}' is not valid: use a path starting with '/', e.g. '/healthz'.");
        if (healthInterval is { } interval && (interval < TimeSpan.FromSeconds(1) || interval > TimeSpan.FromHours(1)))
            yield return ("health_check", $"The health check interval {interval} is not valid: use 1 second to 1 hour.");
    }

    public static bool TryParseUpstream(string? text, out Uri upstream)
    {
        upstream = null!;
        if (text is null || !Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https")
            || uri.Query.Length > 0 || uri.Fragment.Length > 0 || uri.UserInfo.Length > 0 || string.IsNullOrEmpty(uri.Host))
            return false;
        upstream = uri;
        return true;
    }
}

internal sealed class GatewayOptionsValidator : IValidateOptions<GatewayOptions>
{
    public ValidateOptionsResult Validate(string? name, GatewayOptions o)
    {
        var errors = new List<string>();
        var seen = new HashSet<(string, string)>();
        for (var i = 0; i < o.Services.Count; i++)
        {
            var s = o.Services[i];
            if (s.Upstream is not null && s.Upstreams.Count > 0)
                errors.Add($"Gateway:Services:{i}: both Upstream and Upstreams are set. Keep one: Upstream for one address, Upstreams for replicas.");
            foreach (var (field, error) in ServiceRules.Check(s.Name, s.Version, s.AllUpstreams, s.HealthCheck?.Path, s.HealthCheck?.Interval))
                errors.Add($"Gateway:Services:{i}:{ConfigKey(field)}: {error}");
            if (s.Name is not null && s.Version is not null && !seen.Add((s.Name, s.Version)))
                errors.Add($"Gateway:Services:{i}: '{s.Name}_{s.Version}' is listed twice. Remove one of them.");
        }
        for (var i = 0; i < o.TrustedProxies.Count; i++)
        {
            if (!IPNetwork.TryParse(o.TrustedProxies[i], out _) && !IPAddress.TryParse(o.TrustedProxies[i], out _))
                errors.Add($"Gateway:TrustedProxies:{i} is '{o.TrustedProxies[i]}'. Use an address (10.0.0.5) or a CIDR range (10.0.0.0/8).");
        }
        if (o.UpstreamTimeout < TimeSpan.FromSeconds(1) || o.UpstreamTimeout > TimeSpan.FromHours(1))
            errors.Add($"Gateway:UpstreamTimeout is {o.UpstreamTimeout}. Set it between 00:00:01 and 01:00:00.");
        if (o.ConnectTimeout < TimeSpan.FromMilliseconds(100) || o.ConnectTimeout > TimeSpan.FromMinutes(5))
            errors.Add($"Gateway:ConnectTimeout is {o.ConnectTimeout}. Set it between 00:00:00.1 and 00:05:00.");
        if (o.ReactivationPeriod < TimeSpan.FromSeconds(1) || o.ReactivationPeriod > TimeSpan.FromHours(1))
            errors.Add($"Gateway:ReactivationPeriod is {o.ReactivationPeriod}. Set it between 00:00:01 and 01:00:00.");
        if (!ServiceHosts.TryParsePattern(o.ServiceHost, out _, out _, out var hostError))
            errors.Add($"Gateway:ServiceHost is '{o.ServiceHost}'. {hostError}");
        if (!ForwardAuthSources.All.Contains(o.ForwardAuthSource, StringComparer.OrdinalIgnoreCase))
            errors.Add($"Gateway:ForwardAuthSource is '{o.ForwardAuthSource}'. Set it to one of: {string.Join(", ", ForwardAuthSources.All)}.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static string ConfigKey(string field) => field switch
    {
        "health_check" => "HealthCheck",
        _ => char.ToUpperInvariant(field[0]) + field[1..],
    };
}

/// <summary>The trusted proxies, parsed once, and the client address they report.</summary>
internal sealed class TrustedProxies(IOptions<GatewayOptions> options)
{
    private readonly IPNetwork[] _networks = (options.Value.TrustedProxies.Count == 0 ? GatewayOptions.LoopbackProxies : [.. options.Value.TrustedProxies])
        .Select(p => IPNetwork.TryParse(p, out var n) ? n : new IPNetwork(IPAddress.Parse(p), IPAddress.Parse(p).GetAddressBytes().Length * 8))
        .ToArray();

    public IReadOnlyList<IPNetwork> Networks => _networks;

    /// <summary>
    /// The client's address (docs/decisions.md, "The client address"): the TCP peer's, unless the peer is a trusted proxy;
    /// then <c>X-Forwarded-For</c> is read from its end, each trusted proxy vouching for the hop before it, and the first
    /// address that is not a trusted proxy is the client. What a client writes into the header itself sits further left
    /// and is never reached. An entry a trusted proxy wrote that is not an address leaves the client unknown (null).
    /// </summary>
    public IPAddress? ClientOf(HttpContext http)
    {
        var address = Unmapped(http.Connection.RemoteIpAddress);
        if (!Contains(address))
            return address;
        var forwarded = http.Request.Headers["X-Forwarded-For"];
        for (var header = forwarded.Count - 1; header >= 0; header--)
        {
            var hops = (forwarded[header] ?? "").AsSpan();
            while (hops.Length > 0)
            {
                var comma = hops.LastIndexOf(',');
                var hop = hops[(comma + 1)..].Trim();
                hops = comma < 0 ? [] : hops[..comma];
                if (hop.IsEmpty)
                    continue;
                // An address, or an address and port as some proxies write it (192.0.2.7:51234, [2001:db8::7]:51234).
                if (!IPEndPoint.TryParse(hop, out var reported))
                    return null;
                address = Unmapped(reported.Address);
                if (!Contains(address))
                    return address;
            }
        }
        return address;
    }

    private static IPAddress? Unmapped(IPAddress? address) => address is { IsIPv4MappedToIPv6: true } ? address.MapToIPv4() : address;

    public bool Contains(IPAddress? address) => Hosting.ClientAddresses.InAny(_networks, address);
}
