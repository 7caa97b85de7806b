namespace Portcullis.Gateway;

/// <summary>
/// Which service a forward-auth request is about (docs/gateway.md, "Forward-auth"). Exactly one configured source
/// names it — <c>?service=</c> from the proxy's own configuration, or one header set by a trusted proxy — and a
/// host matching <c>Gateway:ServiceHost</c> in <c>X-Forwarded-Host</c> names it in every mode. What a client can
/// add to its request (a second header, an encoded path) never changes the answer: it is refused instead.
/// </summary>
internal sealed record ForwardAuthTarget(string? Name, string? Label, string? ReturnUrl, string? Error)
{
    private static readonly ForwardAuthTarget None = new(null, null, null, null);

    private static ForwardAuthTarget Invalid(string error) => new(null, null, null, error);

    public static ForwardAuthTarget Read(HttpContext http, string source, TrustedProxies trusted, ServiceHosts hosts, ServiceRegistry registry)
    {
        var request = http.Request;
        var fromProxy = trusted.Contains(http.Connection.RemoteIpAddress);
        var original = fromProxy ? request.Headers["X-Original-URI"].ToString() : "";
        var forwarded = fromProxy ? request.Headers["X-Forwarded-Uri"].ToString() : "";
        var named = request.Query["service"];
        var isQuery = source.Equals(ForwardAuthSources.Query, StringComparison.OrdinalIgnoreCase);

        string? name = null;
        string? uri = null;
        if (isQuery)
        {
            if (named.Count > 0)
            {
                if (named.Count > 1 || !ServiceRules.Name().IsMatch(named.ToString()))
                    return Invalid("The service named by ?service= is not a valid service name.");
                name = named.ToString();
            }
            uri = original.Length > 0 ? original : forwarded.Length > 0 ? forwarded : null;
        }
        else
        {
            if (named.Count > 0)
                return Invalid($"Portcullis reads the service from {source} (Gateway:ForwardAuthSource), not from ?service=. Remove ?service= from the proxy's auth URL, or set Gateway:ForwardAuthSource to 'query'.");
            if (original.Length > 0 && forwarded.Length > 0 && original != forwarded)
                return Invalid("X-Original-URI and X-Forwarded-Uri disagree; the request cannot be trusted.");
            uri = source.Equals(ForwardAuthSources.OriginalUri, StringComparison.OrdinalIgnoreCase) ? original : forwarded;
            if (uri.Length == 0)
                uri = null;
            else if (PathOf(uri, out var path) is { } malformed)
                return Invalid(malformed);
            else if (path.StartsWith(GatewayMiddleware.PathPrefix, StringComparison.Ordinal))
            {
                var segment = path[GatewayMiddleware.PathPrefix.Length..].Split('/', 2)[0];
                var candidate = segment.Split('_', 2)[0];
                if (!ServiceRules.Name().IsMatch(candidate))
                    return Invalid($"The service named by {source} is not a valid service name.");
                name = candidate;
            }
        }

        string? label = null;
        if (fromProxy && request.Headers["X-Forwarded-Host"].ToString() is { Length: > 0 } host && hosts.LabelOf(new HostString(host)) is { } hostLabel)
        {
            label = hostLabel;
            name ??= registry.FindByLabel(hostLabel)?.Name ?? ServiceHosts.NameOf(hostLabel);
        }
        if (name is null && label is null)
            return None;
        string? returnUrl = null;
        if (uri is not null && PathOf(uri, out _) is null)
            returnUrl = Web.WebPages.SafeReturnUrl(uri);
        return new ForwardAuthTarget(name, label, returnUrl, null);
    }

    /// <summary>
    /// The normalised path of an original request URI as a proxy reports it (path and query, or an absolute URL),
    /// decoded like Kestrel decodes a request; returns why it is refused, or null.
    /// </summary>
    internal static string? PathOf(string uri, out string path)
    {
        path = "/";
        if (uri.Length > 8192 || uri.Any(char.IsControl))
            return "The original URI is malformed.";
        if (!uri.StartsWith('/'))
        {
            // Some proxies send the whole URL.
            if (!Uri.TryCreate(uri, UriKind.Absolute, out var absolute) || absolute.Scheme is not ("http" or "https"))
                return "The original URI is malformed: expected a path such as /services/app/x, or an absolute http(s) URL.";
            uri = absolute.PathAndQuery;
        }
        var raw = uri.Split('?', '#')[0];
        if (raw.Contains("%2f", StringComparison.OrdinalIgnoreCase) || raw.Contains("%5c", StringComparison.OrdinalIgnoreCase) || raw.Contains("%00", StringComparison.Ordinal))
            return "The original URI contains an encoded '/', '\\' or NUL, which Portcullis does not interpret.";
        string decoded;
        try
        {
            decoded = Uri.UnescapeDataString(raw);
        }
        catch (UriFormatException)
        {
            return "The original URI is malformed.";
        }
        if (GatewayPaths.Refusal(decoded) is { } refusal)
            return refusal;
        path = RemoveDotSegments(decoded);
        return null;
    }

    /// <summary>RFC 3986 §5.2.4 on a decoded path: what the application behind the proxy will serve.</summary>
    internal static string RemoveDotSegments(string path)
    {
        var output = new List<string>();
        var segments = path.Split('/');
        for (var i = 1; i < segments.Length; i++)
        {
            var segment = segments[i];
            if (segment == "..")
            {
                if (output.Count > 0)
                    output.RemoveAt(output.Count - 1);
                if (i == segments.Length - 1)
                    output.Add("");
            }
            else if (segment == ".")
            {
                if (i == segments.Length - 1)
                    output.Add("");
            }
            else
            {
                output.Add(segment);
            }
        }
        return "/" + string.Join('/', output);
    }
}
