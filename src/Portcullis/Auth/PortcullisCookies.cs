using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;

namespace Portcullis.Auth;

/// <summary>
/// Every cookie Portcullis sets, named in one place: the gateway keeps all of them (and anything named like
/// them) from upstreams, and drops an upstream's attempt to set one. Under HTTPS each is <c>__Host-</c>.
/// </summary>
internal static class PortcullisCookies
{
    /// <summary>The web session of the UI origin.</summary>
    public static string Session(bool https) => https ? "__Host-portcullis" : "portcullis";

    /// <summary>A session on one service's own origin.</summary>
    public static string ServiceSession(bool https) => https ? "__Host-portcullis-service" : "portcullis-service";

    /// <summary>The state of a service origin's login handshake, checked when the browser comes back.</summary>
    public static string HandshakeState(bool https) => https ? "__Host-portcullis-state" : "portcullis-state";

    public static string Antiforgery(bool https) => https ? "__Host-portcullis-antiforgery" : "portcullis-antiforgery";

    /// <summary>The access token Daeploy's CLI logs in with (docs/compatibility.md): the name its CLI reads.</summary>
    public const string Daeploy = "daeploy";

    /// <summary>
    /// Whether a cookie name is (or pretends to be) one of Portcullis's: <c>portcullis</c>, <c>portcullis-*</c>, <c>daeploy</c>
    /// (the access token Daeploy's CLI logs in with), any of those behind a <c>__Host-</c> or <c>__Secure-</c> prefix, and
    /// ASP.NET Core's own (<c>.AspNetCore.*</c>), in any case.
    /// </summary>
    public static bool IsOurs(ReadOnlySpan<char> name)
    {
        name = name.Trim();
        if (name.StartsWith("__Host-", StringComparison.OrdinalIgnoreCase))
            name = name["__Host-".Length..];
        else if (name.StartsWith("__Secure-", StringComparison.OrdinalIgnoreCase))
            name = name["__Secure-".Length..];
        return name.Equals("portcullis", StringComparison.OrdinalIgnoreCase) || name.StartsWith("portcullis-", StringComparison.OrdinalIgnoreCase)
            || name.StartsWith(".AspNetCore.", StringComparison.OrdinalIgnoreCase) || name.Equals(Daeploy, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>A request's <c>Cookie</c> header without Portcullis's cookies ("" when none is left).</summary>
    public static string Without(StringValues cookieHeaders)
    {
        List<string>? kept = null;
        foreach (var value in cookieHeaders)
        {
            foreach (var pair in (value ?? "").Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                var eq = pair.IndexOf('=');
                if (!IsOurs(eq < 0 ? pair : pair.AsSpan(0, eq)))
                    (kept ??= []).Add(pair);
            }
        }
        return kept is null ? "" : string.Join("; ", kept);
    }

    /// <summary>An upstream's <c>Set-Cookie</c> headers without any that would set one of Portcullis's cookies.</summary>
    public static StringValues WithoutSetCookies(StringValues setCookies)
    {
        var kept = new List<string>(setCookies.Count);
        foreach (var value in setCookies)
        {
            if (value is null)
                continue;
            var eq = value.IndexOf('=');
            if (!IsOurs(eq < 0 ? value : value.AsSpan(0, eq)))
                kept.Add(value);
        }
        return kept.Count == setCookies.Count ? setCookies : new StringValues([.. kept]);
    }

    public static CookieOptions Options(bool https, DateTimeOffset? expires, string path = "/") => new()
    {
        HttpOnly = true,
        SameSite = Microsoft.AspNetCore.Http.SameSiteMode.Lax,
        Secure = https,
        Path = path,
        Expires = expires,
        IsEssential = true,
    };
}
