using System.Net;
using Portcullis.Gateway;

namespace Portcullis.Hosting;

internal static class ClientAddresses
{
    /// <summary>
    /// The address of the client that sent the request: the TCP peer's, or behind trusted proxies the one they report
    /// (<see cref="TrustedProxies.ClientOf"/>). Audit events, throttles, sessions and token policies all use this one.
    /// </summary>
    public static IPAddress? ClientAddress(this HttpContext http) =>
        http.RequestServices?.GetService<TrustedProxies>() is { } trusted ? trusted.ClientOf(http) : http.Connection.RemoteIpAddress;
}
