using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;
using Portcullis.Auth;
using Portcullis.Hosting;

namespace Portcullis.Gateway;

/// <summary>
/// Forwards one request to an upstream and streams the answer back, on one pooled
/// <see cref="SocketsHttpHandler"/>. Modelled on YARP's <c>HttpForwarder</c>: hop-by-hop headers are
/// dropped both ways, bodies are streamed (never buffered), a WebSocket upgrade becomes a two-way
/// copy, and errors map to 502 (unreachable), 504 (too slow) or an aborted connection once the
/// answer has started. What the caller must not pass on is removed before anything is sent:
/// its credentials and any <c>X-Portcullis-*</c> header it made up.
/// </summary>
internal sealed class Forwarder : IDisposable
{
    private readonly HttpMessageInvoker _client;
    private readonly GatewayOptions _options;
    private readonly TrustedProxies _trusted;
    private readonly PrometheusMetrics _metrics;
    private readonly ILogger<Forwarder> _logger;

    public Forwarder(IOptions<GatewayOptions> options, TrustedProxies trusted, PrometheusMetrics metrics, ILogger<Forwarder> logger)
    {
        _options = options.Value;
        _trusted = trusted;
        _metrics = metrics;
        _logger = logger;
        _client = new HttpMessageInvoker(new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            ConnectTimeout = _options.ConnectTimeout,
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(60),
            // Bounded so that DNS changes of an upstream are noticed.
            PooledConnectionLifetime = TimeSpan.FromMinutes(10),
            EnableMultipleHttp2Connections = true,
            // Headers are copied by hand below; nothing may be added on our behalf.
            ActivityHeadersPropagator = null,
        }, disposeHandler: true);
    }

    public const string IdentityHeaderPrefix = "X-Portcullis-";

    private static readonly HashSet<string> HopByHop = new(StringComparer.OrdinalIgnoreCase)
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Authorization", "Forwarded", "Content-Length",
        "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Prefix", "X-Forwarded-Port", "X-Real-IP",
    };

    /// <summary>Cookies of Portcullis's own session, removed from what the upstream receives.</summary>
    internal static bool IsPortcullisCookie(string name) =>
        name.Equals("portcullis", StringComparison.Ordinal) || name.Equals("__Host-portcullis", StringComparison.Ordinal)
        || name.Equals("portcullis-antiforgery", StringComparison.Ordinal) || name.Equals("__Host-portcullis-antiforgery", StringComparison.Ordinal) || name.StartsWith(".AspNetCore.Antiforgery", StringComparison.Ordinal);

    /// <summary>Whether a client-sent header pretends to be one of ours, in any case and with '_' or '-'.</summary>
    internal static bool IsIdentityHeader(string name)
    {
        if (name.Length <= IdentityHeaderPrefix.Length)
            return false;
        for (var i = 0; i < IdentityHeaderPrefix.Length; i++)
        {
            var c = name[i] == '_' ? '-' : char.ToLowerInvariant(name[i]);
            if (c != char.ToLowerInvariant(IdentityHeaderPrefix[i]))
                return false;
        }
        return true;
    }

    public async Task ForwardAsync(HttpContext http, ServiceEntry service, string prefix, Credential? credential)
    {
        var request = http.Request;
        var upgrade = http.Features.Get<IHttpUpgradeFeature>();
        var isUpgrade = upgrade is { IsUpgradableRequest: true }
            && request.Headers.Upgrade.ToString().Equals("websocket", StringComparison.OrdinalIgnoreCase);

        using var message = new HttpRequestMessage(HttpMethod.Parse(request.Method), Target(service, request))
        {
            Version = HttpVersion.Version11,
            VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
        };
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        if (!isUpgrade && HasBody(request))
        {
            // Uploads stream through; Kestrel's default 30 MB cap on bodies does not apply here.
            if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
                limit.MaxRequestBodySize = null;
            // The upstream's time to answer counts from the end of the upload, however long that takes.
            message.Content = new UploadContent(request.Body, () => timeout.CancelAfter(_options.UpstreamTimeout));
            if (request.ContentLength is { } length)
                message.Content.Headers.ContentLength = length;
        }
        else
        {
            timeout.CancelAfter(_options.UpstreamTimeout);
        }
        CopyRequestHeaders(http, message, prefix, credential);
        if (isUpgrade)
        {
            message.Headers.TryAddWithoutValidation("Connection", "Upgrade");
            message.Headers.TryAddWithoutValidation("Upgrade", "websocket");
        }

        var started = TimeProvider.System.GetTimestamp();
        HttpResponseMessage response;
        try
        {
            response = await _client.SendAsync(message, timeout.Token);
        }
        catch (Exception e) when (http.RequestAborted.IsCancellationRequested && e is OperationCanceledException or HttpRequestException or IOException)
        {
            return; // The caller went away.
        }
        catch (Exception e) when (e is OperationCanceledException)
        {
            _metrics.ObserveUpstream(service.Name, TimeProvider.System.GetElapsedTime(started));
            await ProblemResponses.WriteAsync(http, StatusCodes.Status504GatewayTimeout, "Gateway timeout",
                $"The service '{service.Key}' did not answer within {_options.UpstreamTimeout.TotalSeconds:0} s.");
            return;
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            _metrics.ObserveUpstream(service.Name, TimeProvider.System.GetElapsedTime(started));
            _logger.LogWarning("Upstream of {Service} failed: {Error}", service.Key, e.Message);
            var connectTimedOut = e.InnerException is OperationCanceledException or TimeoutException;
            await ProblemResponses.WriteAsync(http, connectTimedOut ? StatusCodes.Status504GatewayTimeout : StatusCodes.Status502BadGateway,
                connectTimedOut ? "Gateway timeout" : "Bad gateway",
                $"The service '{service.Key}' cannot be reached right now. Try again later, or ask its operator.");
            return;
        }

        using (response)
        {
            _metrics.ObserveUpstream(service.Name, TimeProvider.System.GetElapsedTime(started));
            http.Response.StatusCode = (int)response.StatusCode;
            CopyResponseHeaders(response, http.Response);
            if (isUpgrade && response.StatusCode == HttpStatusCode.SwitchingProtocols)
            {
                await TunnelAsync(http, upgrade!, response);
                return;
            }
            try
            {
                // The answer streams as it comes: no buffering, so 1 GiB costs a few buffers of memory.
                await using var body = await response.Content.ReadAsStreamAsync(http.RequestAborted);
                await body.CopyToAsync(http.Response.Body, http.RequestAborted);
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or HttpRequestException)
            {
                // Headers are sent: the only honest signal left is to cut the connection.
                if (!http.RequestAborted.IsCancellationRequested)
                    _logger.LogWarning("Streaming from {Service} failed midway: {Error}", service.Key, e.Message);
                http.Abort();
            }
        }
    }

    private static bool HasBody(HttpRequest request) =>
        request.ContentLength > 0 || request.Headers.TransferEncoding.Count > 0
        || (request.ContentLength is null && !HttpMethods.IsGet(request.Method) && !HttpMethods.IsHead(request.Method)
            && request.HttpContext.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody == true);

    /// <summary>upstream + the path after the service segment, as the caller encoded it (normalised by Kestrel) + the query.</summary>
    private static Uri Target(ServiceEntry service, HttpRequest request)
    {
        var path = request.RouteValues["path"] as string;
        var rest = new PathString("/" + (path ?? ""));
        return new Uri(service.UpstreamBase + rest.ToUriComponent() + request.QueryString.ToUriComponent());
    }

    private void CopyRequestHeaders(HttpContext http, HttpRequestMessage message, string prefix, Credential? credential)
    {
        var request = http.Request;
        var connectionListed = ConnectionTokens(request.Headers.Connection);
        foreach (var (name, values) in request.Headers)
        {
            if (HopByHop.Contains(name) || connectionListed.Contains(name) || IsIdentityHeader(name))
                continue;
            if (name.Equals(HeaderNames.Cookie, StringComparison.OrdinalIgnoreCase))
            {
                if (WithoutPortcullisCookies(values) is { Length: > 0 } cookies)
                    message.Headers.TryAddWithoutValidation(HeaderNames.Cookie, cookies);
                continue;
            }
            if (name.StartsWith("Content-", StringComparison.OrdinalIgnoreCase))
            {
                message.Content?.Headers.TryAddWithoutValidation(name, (IEnumerable<string>)values!);
                continue;
            }
            // WebSocket handshakes keep their Sec-WebSocket-* headers; everything else end to end is copied.
            message.Headers.TryAddWithoutValidation(name, (IEnumerable<string>)values!);
        }

        // X-Forwarded-*: ours, replacing whatever the caller sent, unless a trusted proxy stands before us.
        var remote = http.Connection.RemoteIpAddress;
        var clientIp = remote?.IsIPv4MappedToIPv6 == true ? remote.MapToIPv4().ToString() : remote?.ToString() ?? "";
        var forwardedFor = request.Headers["X-Forwarded-For"] is { Count: > 0 } previous && _trusted.Contains(remote)
            ? $"{previous}, {clientIp}" : clientIp;
        message.Headers.TryAddWithoutValidation("X-Forwarded-For", forwardedFor);
        message.Headers.TryAddWithoutValidation("X-Forwarded-Proto", request.Scheme);
        message.Headers.TryAddWithoutValidation("X-Forwarded-Host", request.Host.ToUriComponent());
        message.Headers.TryAddWithoutValidation("X-Forwarded-Prefix", prefix);
        if (credential is not null)
            AddIdentityHeaders(credential, (name, value) => message.Headers.TryAddWithoutValidation(name, value));
    }

    /// <summary>The identity headers of SPEC §5, for the gateway and for forward-auth alike.</summary>
    public static void AddIdentityHeaders(Credential credential, Action<string, string> add)
    {
        add("X-Portcullis-User", credential.Owner.Name);
        add("X-Portcullis-Token-Id", credential.TokenId ?? "");
        add("X-Portcullis-Scopes", credential.Effective.ToString());
    }

    private static readonly HashSet<string> NoTokens = new(StringComparer.OrdinalIgnoreCase);

    private static HashSet<string> ConnectionTokens(StringValues connection)
    {
        if (connection.Count == 0)
            return NoTokens;
        var tokens = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var value in connection)
        {
            foreach (var token in (value ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                tokens.Add(token);
        }
        return tokens;
    }

    private static string WithoutPortcullisCookies(StringValues values)
    {
        var kept = new List<string>();
        foreach (var value in values)
        {
            foreach (var pair in (value ?? "").Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                var eq = pair.IndexOf('=');
                if (!IsPortcullisCookie(eq < 0 ? pair : pair[..eq]))
                    kept.Add(pair);
            }
        }
        return string.Join("; ", kept);
    }

    private static void CopyResponseHeaders(HttpResponseMessage response, HttpResponse to)
    {
        // NonValidated: the upstream's headers as they came, without parsing them into typed values.
        var connection = response.Headers.NonValidated.TryGetValues("Connection", out var c) ? new StringValues([.. c]) : StringValues.Empty;
        var connectionListed = ConnectionTokens(connection);
        Copy(response.Headers.NonValidated, to, connectionListed);
        Copy(response.Content.Headers.NonValidated, to, connectionListed);
        if (response.StatusCode == HttpStatusCode.SwitchingProtocols)
        {
            to.Headers.Connection = "Upgrade";
            to.Headers.Upgrade = "websocket";
        }

        static void Copy(System.Net.Http.Headers.HttpHeadersNonValidated headers, HttpResponse to, HashSet<string> connectionListed)
        {
            foreach (var (name, values) in headers)
            {
                if (ResponseHopByHop.Contains(name) || (connectionListed.Count > 0 && connectionListed.Contains(name)))
                    continue;
                to.Headers[name] = values.Count == 1 ? new StringValues(values.ToString()) : new StringValues([.. values]);
            }
        }
    }

    private static readonly HashSet<string> ResponseHopByHop = new(StringComparer.OrdinalIgnoreCase)
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Trailer", "Upgrade",
    };

    /// <summary>A WebSocket (or any 101 upgrade): both byte streams copied until either side closes.</summary>
    private async Task TunnelAsync(HttpContext http, IHttpUpgradeFeature upgrade, HttpResponseMessage response)
    {
        await using var upstream = await response.Content.ReadAsStreamAsync(http.RequestAborted);
        await using var client = await upgrade.UpgradeAsync();
        using var done = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        var toUpstream = CopyAsync(client, upstream, done);
        var toClient = CopyAsync(upstream, client, done);
        await Task.WhenAny(toUpstream, toClient);
        await done.CancelAsync();
        await Task.WhenAll(toUpstream, toClient);

        static async Task CopyAsync(Stream from, Stream to, CancellationTokenSource done)
        {
            try
            {
                await from.CopyToAsync(to, done.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException)
            {
            }
            finally
            {
                await done.CancelAsync();
            }
        }
    }

    public void Dispose() => _client.Dispose();

    /// <summary>The caller's body, streamed to the upstream; says when it has all been sent.</summary>
    private sealed class UploadContent(Stream body, Action sent) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context, CancellationToken cancellationToken)
        {
            await body.CopyToAsync(stream, cancellationToken);
            sent();
        }

        protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }
}
