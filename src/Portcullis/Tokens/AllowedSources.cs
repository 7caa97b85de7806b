using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Portcullis.Tokens;

/// <summary>
/// Where a token may be used from (docs/token-policies.md, "Allowed source addresses"): CIDR ranges, IPv4 and IPv6,
/// stored space-separated in canonical form. A token without them may be used from anywhere.
/// </summary>
internal static class AllowedSources
{
    public const string Field = "allowed_cidrs";

    /// <summary>The most ranges one token may list.</summary>
    public const int MaxRanges = 100;

    /// <summary>
    /// The ranges a request gives, canonical and without repeats (a single address is its /32 or /128), or the rule
    /// they break.
    /// </summary>
    public static Checked<IPNetwork[]> Parse(IReadOnlyList<string> given)
    {
        if (given.Count == 0)
            return new RuleError(Field, $"{Field} needs at least one range, e.g. [\"10.0.0.0/8\"]; leave it out to allow every address.");
        if (given.Count > MaxRanges)
            return new RuleError(Field, $"{Field} may list at most {MaxRanges} ranges.");
        var networks = new List<IPNetwork>(given.Count);
        foreach (var raw in given)
        {
            var text = (raw ?? "").Trim();
            if (ParseOne(text) is not { } network)
                return new RuleError(Field, Unreadable(text));
            if (!networks.Contains(network))
                networks.Add(network);
        }
        return networks.ToArray();
    }

    /// <summary>The ranges as stored, or null when the token may be used from anywhere.</summary>
    public static IPNetwork[]? FromStored(string? stored) =>
        stored is null ? null : [.. stored.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(r => IPNetwork.Parse(r))];

    public static string ToStored(IPNetwork[] networks) => string.Join(' ', networks.Select(n => n.ToString()));

    public static string[]? ToNames(string? stored) => stored?.Split(' ', StringSplitOptions.RemoveEmptyEntries);

    /// <summary>Whether <paramref name="address"/> lies in one of the ranges; an unknown address lies in none.</summary>
    public static bool Allows(IPNetwork[] networks, IPAddress? address) => Hosting.ClientAddresses.InAny(networks, address);

    /// <summary>Whether every range of <paramref name="inner"/> lies inside one of <paramref name="outer"/>.</summary>
    public static bool Within(IPNetwork[] inner, IPNetwork[] outer) =>
        inner.All(i => outer.Any(o => o.PrefixLength <= i.PrefixLength && o.Contains(i.BaseAddress)));

    private static IPNetwork? ParseOne(string text)
    {
        // A zone (fe80::1%eth0) names an interface of some machine, not an address a request comes from; a port
        // ([::1]:80) is not part of an address.
        if (text.AsSpan().IndexOfAny('%', '[') >= 0)
            return null;
        // Only as written: 10.0.0.1/8 is refused (with the fix) rather than read as 10.0.0.0/8, which may not be what was meant.
        var slash = text.IndexOf('/');
        if (slash > 0 && IPNetwork.TryParse(text, out var network))
        {
            // Requests from IPv4 clients are matched as IPv4: an IPv4-mapped range (::ffff:10.0.0.0/104) would never match.
            return IPAddress.TryParse(text.AsSpan(0, slash), out var written) && written.Equals(network.BaseAddress) && !written.IsIPv4MappedToIPv6
                ? network : null;
        }
        // A single address: the range of just that address.
        if (slash < 0 && IPAddress.TryParse(text, out var address) && !address.IsIPv4MappedToIPv6
            && (address.AddressFamily == AddressFamily.InterNetworkV6 || text.Count(c => c == '.') == 3))
            return new IPNetwork(address, address.GetAddressBytes().Length * 8);
        return null;
    }

    /// <summary>Why a range is not accepted, with the fix when the intent is plain (an address inside the range).</summary>
    private static string Unreadable(string text)
    {
        var slash = text.IndexOf('/');
        // Only an address written out in full says what was meant (10/8 does not).
        if (slash > 0 && IPAddress.TryParse(text.AsSpan(0, slash), out var address)
            && address.ToString().Equals(text[..slash], StringComparison.OrdinalIgnoreCase) && !address.IsIPv4MappedToIPv6
            && int.TryParse(text.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var prefix)
            && prefix <= address.GetAddressBytes().Length * 8)
        {
            var bytes = address.GetAddressBytes();
            for (var bit = prefix; bit < bytes.Length * 8; bit++)
                bytes[bit / 8] &= (byte)~(0x80 >> (bit % 8));
            return $"'{text}' has bits set past its prefix: the range it names is written {new IPAddress(bytes)}/{prefix}.";
        }
        return $"'{text}' is not an address range. Write a CIDR range (10.0.0.0/8, 2001:db8::/32) or a single address.";
    }
}
