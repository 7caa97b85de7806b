using System.Net;
using Portcullis.Gateway;

namespace Portcullis.Hosting;

/// <summary>Client addresses: whose request it is (docs/decisions.md, "The client address"), and whether it lies in given ranges.</summary>
internal static class ClientAddresses
{
    /// <summary>
    /// The address of the client that sent the request: the TCP peer's, or behind trusted proxies the one they report
    /// (<see cref="TrustedProxies.ClientOf"/>). Audit events, throttles, sessions and token policies all use this one.
    /// </summary>
    public static IPAddress? ClientAddress(this HttpContext http) =>
        http.RequestServices?.GetService<TrustedProxies>() is { } trusted ? trusted.ClientOf(http) : http.Connection.RemoteIpAddress;

    /// <summary>Whether <paramref name="address"/> lies in one of <paramref name="ranges"/>; IPv4-mapped IPv6 counts as IPv4, and an unknown address lies in none.</summary>
    public static bool InAny(IPNetwork[] ranges, IPAddress? address)
    {
        if (address is null)
            return false;
        if (address.IsIPv4MappedToIPv6)
            address = address.MapToIPv4();
        foreach (var range in ranges)
        {
            if (range.Contains(address))
                return true;
        }
        return false;
    }
}
