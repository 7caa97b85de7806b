using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;
using Portcullis.Auth;
using Portcullis.Hosting;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Model;

namespace Portcullis.Gateway;

/// <summary>
/// Sends one authorised request to a replica of a service with YARP's <see cref="IHttpForwarder"/> (streaming
/// both ways, hop-by-hop headers, WebSocket and HTTP/2 upgrades) and <see cref="GatewayTransformer"/> (what the
/// caller must not pass on, and what the service must not set). Retries an idempotent request without a body
/// once on another replica when the first could not be reached. Failures are problem documents naming the
/// reason: 502 unreachable, 503 no healthy replica, 504 too slow.
/// </summary>
internal sealed partial class GatewayForwarder : IDisposable
{
    private readonly IHttpForwarder _forwarder;
    private readonly Replicas _clusters;
    private readonly GatewayOptions _options;
    private readonly TrustedProxies _trusted;
    private readonly PortcullisMetrics _metrics;
    private readonly ILogger<GatewayForwarder> _logger;
    private readonly HttpMessageInvoker _client;
    private readonly ForwarderRequestConfig _requestConfig;

    public GatewayForwarder(IHttpForwarder forwarder, Replicas clusters, IOptions<GatewayOptions> options, TrustedProxies trusted,
        PortcullisMetrics metrics, Tracing tracing, ILogger<GatewayForwarder> logger)
    {
        _forwarder = forwarder;
        _clusters = clusters;
        _options = options.Value;
        _trusted = trusted;
        _metrics = metrics;
        _logger = logger;
        // One pool of upstream connections for every service, configured as YARP's own client factory does.
        _client = new HttpMessageInvoker(new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = _options.ConnectTimeout,
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(60),
            // Bounded so that DNS changes of an upstream are noticed.
            PooledConnectionLifetime = TimeSpan.FromMinutes(10),
            // Without tracing nothing is added to the upstream request on our behalf (the caller's own trace headers pass
            // as they came). With it, the upstream call is a span of its own, and the service gets that span's context in
            // place of the caller's (YARP's propagator replaces, where the default one would keep the caller's).
            ActivityHeadersPropagator = tracing.IsOn ? new ReverseProxyPropagator(DistributedContextPropagator.Current) : null,
        }, disposeHandler: true);
        _requestConfig = new ForwarderRequestConfig
        {
            // The upstream must say something within this time: send headers, or a byte of the body.
            ActivityTimeout = _options.UpstreamTimeout,
            Version = HttpVersion.Version11,
            VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
        };
    }

    /// <param name="path">The path after the service's prefix, as Kestrel decoded it (starts with '/').</param>
    /// <param name="prefix">What the service is mounted under on the gateway (<c>X-Forwarded-Prefix</c>), or null on its own origin.</param>
    /// <param name="sandbox">Path mode: every response is sandboxed, so that a page opened there runs in an opaque origin.</param>
    public async Task ForwardAsync(HttpContext http, ServiceEntry service, string path, string? prefix, Credential? credential, bool sandbox)
    {
        if (GatewayPaths.Refusal(path) is { } refusal)
        {
            await ProblemResponses.WriteAsync(http, StatusCodes.Status400BadRequest, "Bad request", refusal);
            return;
        }
        // Uploads stream through; Kestrel's default 30 MB cap on bodies does not apply here.
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
            limit.MaxRequestBodySize = null;

        var cluster = _clusters.ClusterOf(service);
        var transformer = new GatewayTransformer(this, service, prefix, credential, sandbox);
        var attempts = Math.Min(3, service.Upstreams.Length);
        DestinationState? failed = null;
        for (var attempt = 1; ; attempt++)
        {
            string destination;
            DestinationState? replica = null;
            if (cluster is null)
            {
                // A change of the registry that YARP has not applied yet: the entry's own addresses, without health.
                destination = service.UpstreamBases[service.UpstreamBases.Length == 1 ? 0 : Random.Shared.Next(service.UpstreamBases.Length)];
            }
            else if (_clusters.Pick(cluster, failed) is { } picked)
            {
                replica = picked;
                destination = picked.Model.Config.Address;
            }
            else if (failed is null)
            {
                await NoHealthyReplicaAsync(http, service);
                return;
            }
            else
            {
                break; // the failed attempt's answer stands
            }

            var target = RequestUtilities.MakeDestinationAddress(destination, path, http.Request.QueryString);
            if (!GatewayPaths.StaysUnder(target, service.BasePath))
            {
                await ProblemResponses.WriteAsync(http, StatusCodes.Status400BadRequest, "Bad request", "The path does not stay under the service's base path.");
                return;
            }
            transformer.Target = target;
            var error = await SendAsync(http, destination, transformer, cluster, replica);
            if (error == ForwarderError.None)
                return;
            if (replica is null || attempt >= attempts || !IsRetriable(http, error))
            {
                await FailedAsync(http, service, error);
                return;
            }
            // Nothing of the answer was sent: try another replica as if this attempt never happened.
            Log.Retrying(_logger, service.Key, replica.Model.Config.Address);
            failed = replica;
            http.Features.Set<IForwarderErrorFeature>(null);
            http.Response.Clear();
        }
        await FailedAsync(http, service, http.Features.Get<IForwarderErrorFeature>()?.Error ?? ForwarderError.Request);
    }

    private async ValueTask<ForwarderError> SendAsync(HttpContext http, string destination, GatewayTransformer transformer, ClusterState? cluster, DestinationState? replica)
    {
        if (replica is null)
            return await _forwarder.SendAsync(http, destination, _client, _requestConfig, transformer);
        var inFlight = _clusters.InFlight(replica);
        Interlocked.Increment(ref inFlight.Value);
        try
        {
            return await _forwarder.SendAsync(http, destination, _client, _requestConfig, transformer);
        }
        finally
        {
            Interlocked.Decrement(ref inFlight.Value);
            _clusters.Report(http, cluster!, replica);
        }
    }

    /// <summary>Only a request that can be sent again unchanged: idempotent, no body, nothing answered yet.</summary>
    private static bool IsRetriable(HttpContext http, ForwarderError error)
    {
        var request = http.Request;
        return error == ForwarderError.Request && !http.Response.HasStarted && !http.RequestAborted.IsCancellationRequested
            && (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method) || HttpMethods.IsOptions(request.Method))
            && request.ContentLength is null or 0 && request.Headers.TransferEncoding.Count == 0;
    }

    private async Task NoHealthyReplicaAsync(HttpContext http, ServiceEntry service)
    {
        http.Response.Headers.RetryAfter = ((int)Math.Ceiling(_options.ReactivationPeriod.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
        await ProblemResponses.WriteAsync(http, StatusCodes.Status503ServiceUnavailable, "Service unavailable",
            $"No replica of the service '{service.Key}' is healthy right now. Try again later, or ask its operator.");
    }

    /// <summary>
    /// YARP has set the status (or cut a response already under way); the caller learns why, unless it went away.
    /// </summary>
    private async Task FailedAsync(HttpContext http, ServiceEntry service, ForwarderError error)
    {
        var exception = http.Features.Get<IForwarderErrorFeature>()?.Exception;
        if (http.RequestAborted.IsCancellationRequested || error is ForwarderError.RequestCanceled or ForwarderError.RequestBodyCanceled
            or ForwarderError.ResponseBodyCanceled or ForwarderError.UpgradeRequestCanceled or ForwarderError.UpgradeResponseCanceled)
            return;
        if (http.Response.HasStarted)
        {
            Log.FailedMidway(_logger, service.Key, error, exception?.Message);
            return;
        }
        _metrics.ObserveUpstream(service.Name, TimeSpan.Zero);
        var timedOut = error == ForwarderError.RequestTimedOut || exception?.InnerException is TimeoutException or OperationCanceledException;
        Log.UpstreamFailed(_logger, service.Key, error, exception?.Message);
        http.Response.Clear();
        if (error == ForwarderError.RequestBodyClient)
        {
            await ProblemResponses.WriteAsync(http, StatusCodes.Status400BadRequest, "Bad request", "The request body could not be read from the client.");
            return;
        }
        await ProblemResponses.WriteAsync(http, timedOut ? StatusCodes.Status504GatewayTimeout : StatusCodes.Status502BadGateway,
            timedOut ? "Gateway timeout" : "Bad gateway",
            timedOut
                ? $"The service '{service.Key}' did not answer within {_options.UpstreamTimeout.TotalSeconds:0} s."
                : $"The service '{service.Key}' cannot be reached right now ({Reason(error)}). Try again later, or ask its operator.");
    }

    private static string Reason(ForwarderError error) => error switch
    {
        ForwarderError.Request => "connecting or sending the request failed",
        ForwarderError.RequestBodyDestination => "it stopped reading the request body",
        ForwarderError.ResponseBodyDestination => "it broke off its answer",
        ForwarderError.UpgradeRequestDestination or ForwarderError.UpgradeResponseDestination => "the upgraded connection failed",
        _ => "the answer failed: " + error,
    };

    public void Dispose() => _client.Dispose();

    /// <summary>
    /// One request's transform (docs/gateway.md, "Headers"). The caller's credentials, Portcullis's cookies and
    /// every client-sent <c>X-Portcullis-*</c> header stay behind; the identity headers and <c>X-Forwarded-*</c> are
    /// ours. On the way back, a <c>Set-Cookie</c> for a Portcullis cookie is dropped.
    /// </summary>
    private sealed class GatewayTransformer(GatewayForwarder owner, ServiceEntry service, string? prefix, Credential? credential, bool sandbox)
        : HttpTransformer
    {
        private long _sentAt;

        public Uri Target { get; set; } = null!;

        public override ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest, string destinationPrefix, CancellationToken cancellationToken)
        {
            var request = httpContext.Request;
            var connectionListed = request.Headers.Connection;
            foreach (var (name, values) in request.Headers)
            {
                if (ShouldDrop(name, connectionListed))
                    continue;
                if (name.Equals(HeaderNames.Cookie, StringComparison.OrdinalIgnoreCase))
                {
                    if (PortcullisCookies.Without(values) is { Length: > 0 } cookies)
                        proxyRequest.Headers.TryAddWithoutValidation(HeaderNames.Cookie, cookies);
                    continue;
                }
                Add(proxyRequest, name, values);
            }
            // RFC 9112 §6.1: with both, Transfer-Encoding wins and Content-Length must not be passed on (smuggling).
            if (request.Headers.ContainsKey(HeaderNames.TransferEncoding))
                proxyRequest.Content?.Headers.Remove(HeaderNames.ContentLength);
            // HTTP/2 may carry 'TE: trailers' (gRPC needs it), and nothing else in TE.
            if (HttpProtocol.IsHttp2(request.Protocol) || HttpProtocol.IsHttp3(request.Protocol))
            {
                foreach (var te in request.Headers.GetCommaSeparatedValues(HeaderNames.TE))
                {
                    if (te.Equals("trailers", StringComparison.OrdinalIgnoreCase))
                        proxyRequest.Headers.TryAddWithoutValidation(HeaderNames.TE, "trailers");
                }
            }

            var remote = httpContext.Connection.RemoteIpAddress;
            var clientIp = remote?.IsIPv4MappedToIPv6 == true ? remote.MapToIPv4().ToString() : remote?.ToString() ?? "";
            proxyRequest.Headers.TryAddWithoutValidation("X-Forwarded-For",
                request.Headers["X-Forwarded-For"] is { Count: > 0 } previous && owner._trusted.Contains(remote) ? $"{previous}, {clientIp}" : clientIp);
            proxyRequest.Headers.TryAddWithoutValidation("X-Forwarded-Proto", request.Scheme);
            proxyRequest.Headers.TryAddWithoutValidation("X-Forwarded-Host", request.Host.ToUriComponent());
            if (prefix is not null)
                proxyRequest.Headers.TryAddWithoutValidation("X-Forwarded-Prefix", prefix);
            if (credential is not null)
                IdentityHeaders.Add(credential, (header, value) => proxyRequest.Headers.TryAddWithoutValidation(header, value));

            proxyRequest.RequestUri = Target;
            proxyRequest.Headers.Host = null; // the upstream's own host
            _sentAt = Stopwatch.GetTimestamp();
            return default;
        }

        public override async ValueTask<bool> TransformResponseAsync(HttpContext httpContext, HttpResponseMessage? proxyResponse, CancellationToken cancellationToken)
        {
            if (proxyResponse is not null)
                owner._metrics.ObserveUpstream(service.Name, Stopwatch.GetElapsedTime(_sentAt));
            var copy = await base.TransformResponseAsync(httpContext, proxyResponse, cancellationToken);
            var response = httpContext.Response;
            if (response.Headers.SetCookie.Count > 0)
                response.Headers.SetCookie = PortcullisCookies.WithoutSetCookies(response.Headers.SetCookie);
            if (sandbox)
                response.Headers.Append(HeaderNames.ContentSecurityPolicy, SandboxPolicy);
            return copy;
        }

        private static void Add(HttpRequestMessage proxyRequest, string name, StringValues values)
        {
            var headers = ContentHeaders.Contains(name) ? proxyRequest.Content?.Headers : (System.Net.Http.Headers.HttpHeaders)proxyRequest.Headers;
            if (values.Count == 1)
                headers?.TryAddWithoutValidation(name, values.ToString());
            else
                headers?.TryAddWithoutValidation(name, (IEnumerable<string>)values!);
        }

        private static bool ShouldDrop(string name, StringValues connectionListed) =>
            DroppedRequestHeaders.Contains(name) || name.StartsWith(':') || IdentityHeaders.IsForged(name)
            || (connectionListed.Count > 0 && Lists(connectionListed, name));

        private static bool Lists(StringValues connection, string name)
        {
            foreach (var value in connection)
            {
                foreach (var token in (value ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                {
                    if (token.Equals(name, StringComparison.OrdinalIgnoreCase))
                        return true;
                }
            }
            return false;
        }
    }

    /// <summary>
    /// Path mode's answer to "a service's page acts as the person in Portcullis's origin": the page runs in an
    /// opaque origin. Scripts, forms, pop-ups and downloads still work; same-origin access never does.
    /// </summary>
    public const string SandboxPolicy = "sandbox allow-scripts allow-forms allow-popups allow-downloads allow-modals";

    /// <summary>Hop-by-hop (RFC 9110 §7.6.1), the caller's credential, and the forwarding headers that are ours to set.</summary>
    private static readonly HashSet<string> DroppedRequestHeaders = new(StringComparer.OrdinalIgnoreCase)
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Authorization", "Forwarded", "HTTP2-Settings", "Upgrade-Insecure-Requests", "Alt-Svc",
        "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Prefix", "X-Forwarded-Port", "X-Real-IP",
    };

    private static readonly HashSet<string> ContentHeaders = new(StringComparer.OrdinalIgnoreCase)
    {
        "Allow", "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length", "Content-Location", "Content-MD5",
        "Content-Range", "Content-Type", "Expires", "Last-Modified",
    };

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Upstream of {Service} failed ({Error}): {Reason}")]
        public static partial void UpstreamFailed(ILogger logger, string service, ForwarderError error, string? reason);

        [LoggerMessage(2, LogLevel.Warning, "Streaming from {Service} failed midway ({Error}): {Reason}")]
        public static partial void FailedMidway(ILogger logger, string service, ForwarderError error, string? reason);

        [LoggerMessage(3, LogLevel.Information, "A replica of {Service} at {Address} could not be reached; trying another")]
        public static partial void Retrying(ILogger logger, string service, string address);
    }
}
