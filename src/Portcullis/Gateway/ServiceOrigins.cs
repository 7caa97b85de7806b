using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;
using Microsoft.EntityFrameworkCore;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Security;

namespace Portcullis.Gateway;

/// <summary>
/// How a person's web session reaches a service's own origin (docs/gateway.md, "Service origins"). The service
/// origin cannot see the UI's cookie, so it asks the UI origin for a single-use code:
/// <list type="number">
/// <item>the service origin (no valid cookie) sets a random <em>state</em> cookie on itself and sends the browser to
/// <c>/auth/handshake?service=&amp;state=&amp;returnUrl=</c> on the UI origin;</item>
/// <item>there, a logged-in person who may use the service gets a code (≤ 60 s, bound to the service, the web
/// session and the state) and is sent back to <c>/.portcullis/callback</c> on the service origin (others log in first);</item>
/// <item>the callback redeems the code once, checks the state cookie (so nobody can log a browser into
/// someone else's session), and sets the service origin's own session cookie: a child of the web session
/// that ends with it.</item>
/// </list>
/// </summary>
internal sealed class ServiceOrigins(IDbContextFactory<PortcullisDb> dbs, SessionStore sessions, ServiceHosts hosts, AuditLog audit, TimeProvider time)
{
    /// <summary>Paths on a service origin that Portcullis answers itself; nothing under it reaches the service.</summary>
    public const string ReservedPrefix = "/.portcullis";
    public const string StartPath = ReservedPrefix + "/start";
    public const string CallbackPath = ReservedPrefix + "/callback";

    public static readonly TimeSpan CodeLifetime = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan StateLifetime = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Step 1, on the service origin: remember a fresh state in a cookie and send the browser to the UI origin.
    /// </summary>
    public IResult Start(HttpContext http, string label, string? returnUrl, string publicUrl)
    {
        var state = Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(32));
        var https = http.Request.IsHttps;
        http.Response.Cookies.Append(PortcullisCookies.HandshakeState(https), state,
            PortcullisCookies.Options(https, time.GetUtcNow() + StateLifetime, https ? "/" : ReservedPrefix));
        var back = Web.WebPages.SafeReturnUrl(returnUrl) ?? "/";
        return Results.Redirect($"{publicUrl}/auth/handshake?service={Uri.EscapeDataString(label)}&state={state}&returnUrl={Uri.EscapeDataString(back)}");
    }

    /// <summary>Step 2, on the UI origin: a code for the service origin, for the person of this web session.</summary>
    public async Task<string> IssueCodeAsync(HttpContext http, TokenDigest session, Credential person, string label, string state, CancellationToken cancellationToken)
    {
        var code = Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(32));
        var now = time.GetUtcNow().UtcDateTime;
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        await db.HandshakeCodes.Where(c => c.ExpiresAt < now).ExecuteDeleteAsync(cancellationToken);
        db.HandshakeCodes.Add(new HandshakeCode
        {
            CodeHash = Hash(code), SessionHash = session.ToHex(), Service = label, StateHash = Hash(state), CreatedAt = now, ExpiresAt = now + CodeLifetime,
        });
        db.AuditEvents.Add(audit.Create(http, AuditEvents.OriginCodeIssued, label, person.Owner.Id));
        await db.SaveChangesAsync(cancellationToken);
        return code;
    }

    /// <summary>Where step 2 sends the browser with its code.</summary>
    public string CallbackUrl(string label, string code, string returnUrl) =>
        $"{hosts.Origin(label)}{CallbackPath}?code={Uri.EscapeDataString(code)}&returnUrl={Uri.EscapeDataString(returnUrl)}";

    /// <summary>
    /// Step 3, on the service origin: redeems the code (once, on any instance), checks it was made for this
    /// service and for this browser's state, and opens the service origin's session.
    /// </summary>
    public async Task<IResult> CallbackAsync(HttpContext http, string label, CancellationToken cancellationToken)
    {
        var https = http.Request.IsHttps;
        var code = http.Request.Query["code"].ToString();
        var state = http.Request.Cookies[PortcullisCookies.HandshakeState(https)];
        http.Response.Cookies.Delete(PortcullisCookies.HandshakeState(https), PortcullisCookies.Options(https, null, https ? "/" : ReservedPrefix));
        if (code.Length != 43 || !Base64Url.IsValid(code) || string.IsNullOrEmpty(state))
            return await RefuseAsync(http, label, "The login link is incomplete or was opened in another browser. Open the service again.");

        HandshakeCode? redeemed;
        await using (var db = await dbs.CreateDbContextAsync(cancellationToken))
        {
            // DELETE ... RETURNING: of two instances redeeming the same code, exactly one gets it.
            var hash = Hash(code);
            redeemed = (await db.HandshakeCodes.FromSql($"DELETE FROM handshake_codes WHERE code_hash = {hash} RETURNING *").AsNoTracking().ToListAsync(cancellationToken))
                .SingleOrDefault();
        }
        if (redeemed is null || redeemed.ExpiresAt <= time.GetUtcNow().UtcDateTime)
            return await RefuseAsync(http, label, "The login link has expired or was used already. Open the service again.");
        if (redeemed.Service != label)
            return await RefuseAsync(http, label, "The login link was made for another service. Open the service again.");
        if (!CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(redeemed.StateHash), Encoding.ASCII.GetBytes(Hash(state))))
            return await RefuseAsync(http, label, "The login link was not started in this browser. Open the service again.");

        var opened = await sessions.CreateForServiceAsync(TokenDigest.FromHex(redeemed.SessionHash), label, http, cancellationToken);
        if (opened is not { } session)
            return await RefuseAsync(http, label, "Your Portcullis session has ended. Open the service again to log in.");
        http.Response.Cookies.Append(PortcullisCookies.ServiceSession(https), session.Id, PortcullisCookies.Options(https, null));
        await audit.EnqueueAsync(audit.Create(http, AuditEvents.OriginLogin, label, session.Credential.Owner.Id, details: new { user = session.Credential.Owner.Name }), cancellationToken);
        http.Response.Headers.CacheControl = "no-store";
        return Results.Redirect(Web.WebPages.SafeReturnUrl(http.Request.Query["returnUrl"]) ?? "/");
    }

    private async Task<IResult> RefuseAsync(HttpContext http, string label, string detail)
    {
        await audit.EnqueueAsync(audit.Create(http, AuditEvents.OriginLoginRefused, label, details: new { reason = detail }), http.RequestAborted);
        return TypedResults.Problem(statusCode: StatusCodes.Status400BadRequest, title: "Bad request", detail: detail);
    }

    private static string Hash(string secret) => TokenFormat.Digest(secret).ToHex();
}

/// <summary>A row of <c>handshake_codes</c>: a one-time code that opens a service origin's session (digests only).</summary>
internal sealed class HandshakeCode
{
    public required string CodeHash { get; init; }
    public required string SessionHash { get; init; }
    public required string Service { get; init; }
    public required string StateHash { get; init; }
    public DateTime CreatedAt { get; init; }
    public DateTime ExpiresAt { get; init; }
}
