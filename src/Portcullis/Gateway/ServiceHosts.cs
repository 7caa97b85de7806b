using Microsoft.Extensions.Options;

namespace Portcullis.Gateway;

/// <summary>
/// The origins of services (docs/gateway.md, "Service origins"): <c>Gateway:ServiceHost</c> is a pattern such
/// as <c>{service}.svc.example.com</c>, whose first label names the service. <c>model</c> is the newest
/// version of <c>model</c>; <c>model--1-0</c> is version <c>1.0</c> (<c>.</c> written as <c>-</c>, since a DNS
/// label has no dots). Scheme and port are those of <c>PublicUrl</c> (unless the pattern names a port, as when a
/// proxy in front of the applications listens elsewhere), so that a local start needs no set-up: browsers resolve
/// every <c>*.localhost</c> name to loopback.
/// </summary>
internal sealed class ServiceHosts
{
    public const string Placeholder = "{service}";
    public const string DefaultPattern = "{service}.localhost";

    /// <summary>Between a service's name and its version in a host label.</summary>
    public const string VersionSeparator = "--";

    private readonly string _suffix;
    private readonly string _scheme;
    private readonly string _port;

    public ServiceHosts(IOptions<GatewayOptions> options, Auth.PublicUrl publicUrl)
    {
        TryParsePattern(options.Value.ServiceHost, out var suffix, out var port, out _);
        _suffix = suffix ?? DefaultPattern[Placeholder.Length..];
        var url = new Uri(publicUrl.Value);
        _scheme = url.Scheme;
        var effectivePort = port ?? (url.IsDefaultPort ? null : url.Port);
        _port = effectivePort is { } p ? ":" + p.ToString(System.Globalization.CultureInfo.InvariantCulture) : "";
    }

    /// <summary>The pattern must be <c>{service}</c> followed by a dot and a host name, and optionally <c>:port</c>.</summary>
    public static bool TryParsePattern(string? pattern, out string? suffix, out int? port, out string? error)
    {
        suffix = null;
        port = null;
        error = null;
        if (pattern is null || !pattern.StartsWith(Placeholder + ".", StringComparison.Ordinal))
        {
            error = "Start it with '{service}.' followed by a domain whose names all lead to Portcullis, e.g. '{service}.svc.example.com' or '{service}.localhost'.";
            return false;
        }
        var rest = pattern[Placeholder.Length..];
        var colon = rest.IndexOf(':');
        if (colon >= 0)
        {
            if (!int.TryParse(rest.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var p) || p is < 1 or > 65535)
            {
                error = "The port after the host must be a number from 1 to 65535, e.g. '{service}.svc.example.com:8443'.";
                return false;
            }
            port = p;
            rest = rest[..colon];
        }
        if (Uri.CheckHostName(rest[1..]) != UriHostNameType.Dns || rest.Contains('{'))
        {
            error = "After '{service}.' give a DNS name, e.g. 'svc.example.com'; the scheme (and, unless given, the port) are those of PublicUrl.";
            return false;
        }
        suffix = rest.ToLowerInvariant();
        return true;
    }

    /// <summary>The service label of a request's host (<c>model</c> or <c>model--1-0</c>), or null when the host is not a service origin.</summary>
    public string? LabelOf(HostString host)
    {
        var name = host.Host;
        if (name.Length <= _suffix.Length || !name.EndsWith(_suffix, StringComparison.OrdinalIgnoreCase))
            return null;
        var label = name.AsSpan(0, name.Length - _suffix.Length);
        return label.Contains('.') ? null : label.ToString().ToLowerInvariant();
    }

    /// <summary>The label of one version of a service.</summary>
    public static string Label(string name, string version) => name + VersionSeparator + version.Replace('.', '-').ToLowerInvariant();

    /// <summary>The name part of a label: what the credential's scope is checked against.</summary>
    public static string NameOf(string label)
    {
        var separator = label.IndexOf(VersionSeparator, StringComparison.Ordinal);
        return separator < 0 ? label : label[..separator];
    }

    /// <summary>Every service origin, as a CSP source: <c>http://*.localhost:8080</c>.</summary>
    public string AnyOrigin => $"{_scheme}://*{_suffix}{_port}";

    /// <summary><c>http://model.localhost:8080</c>: where a browser uses the service.</summary>
    public string Origin(string label) => $"{_scheme}://{label}{_suffix}{_port}";
}
