using System.Net;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;

namespace Portcullis.Gateway;

/// <summary>Configuration section <c>Gateway</c>: the services from configuration, trusted proxies, timeouts.</summary>
internal sealed class GatewayOptions
{
    public const string Section = "Gateway";

    /// <summary>Services known from configuration (SPEC §5). More can be added through the API.</summary>
    public List<ServiceConfig> Services { get; set; } = [];

    /// <summary>
    /// Addresses (or CIDR ranges) whose <c>X-Original-URI</c>, <c>X-Forwarded-Uri</c> and <c>X-Forwarded-For</c>
    /// are believed. Empty (the default) means loopback only.
    /// </summary>
    public List<string> TrustedProxies { get; set; } = [];

    public static readonly string[] LoopbackProxies = ["127.0.0.0/8", "::1/128"];

    /// <summary>How long an upstream may take to send its response headers before the caller gets 504.</summary>
    public TimeSpan UpstreamTimeout { get; set; } = TimeSpan.FromSeconds(100);

    /// <summary>How long connecting to an upstream may take before the caller gets 502.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);
}

internal sealed class ServiceConfig
{
    public string? Name { get; set; }
    public string? Version { get; set; }
    public string? Upstream { get; set; }
    public bool Protected { get; set; } = true;
    public string? Description { get; set; }
}

/// <summary>The rules of SPEC §5 for a registry entry, shared by configuration and the API.</summary>
internal static partial class ServiceRules
{
    [GeneratedRegex("^[a-z0-9-]{1,64}$")]
    public static partial Regex Name();

    [GeneratedRegex("^[A-Za-z0-9.-]{1,64}$")]
    public static partial Regex Version();

    /// <summary>Checks one entry; returns what is wrong with each field, phrased with the fix.</summary>
    public static IEnumerable<(string Field, string Error)> Check(string? name, string? version, string? upstream)
    {
        if (name is null || !Name().IsMatch(name))
            yield return ("name", $"The name '{name}' is not valid: use 1 to 64 lowercase letters, digits and '-', e.g. 'model-server'.");
        if (version is null || !Version().IsMatch(version))
            yield return ("version", $"The version '{version}' is not valid: use 1 to 64 letters, digits, '.' and '-', e.g. '1.0.2'.");
        if (!TryParseUpstream(upstream, out _))
            yield return ("upstream", $"The upstream '{upstream}' is not valid: use an absolute http or https URL without query or fragment, e.g. 'http://127.0.0.1:5000' or 'http://host:5000/base'.");
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
            foreach (var (field, error) in ServiceRules.Check(s.Name, s.Version, s.Upstream))
                errors.Add($"Gateway:Services:{i}:{char.ToUpperInvariant(field[0])}{field[1..]}: {error}");
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
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>The trusted proxies, parsed once.</summary>
internal sealed class TrustedProxies(IOptions<GatewayOptions> options)
{
    private readonly IPNetwork[] _networks = (options.Value.TrustedProxies.Count == 0 ? GatewayOptions.LoopbackProxies : [.. options.Value.TrustedProxies])
        .Select(p => IPNetwork.TryParse(p, out var n) ? n : new IPNetwork(IPAddress.Parse(p), IPAddress.Parse(p).GetAddressBytes().Length * 8))
        .ToArray();

    public IReadOnlyList<IPNetwork> Networks => _networks;

    public bool Contains(IPAddress? address)
    {
        if (address is null)
            return false;
        if (address.IsIPv4MappedToIPv6)
            address = address.MapToIPv4();
        foreach (var network in _networks)
        {
            if (network.Contains(address))
                return true;
        }
        return false;
    }
}
