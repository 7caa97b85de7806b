using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Gateway;

/// <summary>
/// Forward-auth for nginx <c>auth_request</c>, Caddy <c>forward_auth</c> and Traefik <c>ForwardAuth</c>
/// (<c>GET /auth/verify</c>, docs/gateway.md): 200 with the identity headers, 401 with a challenge (and, for a
/// browser on a service's own host, where to log in), 403, 400 for a malformed or contradictory request, 503
/// when it cannot decide. Answered ahead of the pipeline by <see cref="GatewayMiddleware"/>: it is asked on every
/// request the proxy lets through.
/// </summary>
internal sealed class ForwardAuth(
    ServiceRegistry registry,
    ServiceHosts hosts,
    TrustedProxies trusted,
    SessionStore sessions,
    CredentialVerifier verifier,
    IOptions<GatewayOptions> options,
    AuditLog audit,
    PortcullisMetrics metrics)
{
    public const string Path = "/auth/verify";

    /// <summary>Where a proxy sends a browser that has no session on the application's host yet (a path on that host).</summary>
    public const string LoginHeader = "X-Portcullis-Login";

    /// <summary>The request's cookies without Portcullis's own: what the application may see.</summary>
    public const string CookieHeader = "X-Portcullis-Cookie";

    public async Task VerifyAsync(HttpContext http)
    {
        var headers = http.Response.Headers;
        headers.CacheControl = "no-store";
        headers.XContentTypeOptions = "nosniff";
        var target = ForwardAuthTarget.Read(http, options.Value.ForwardAuthSource, trusted, hosts, registry);
        if (target.Error is { } error)
        {
            await ProblemResponses.WriteAsync(http, StatusCodes.Status400BadRequest, "Bad request", error);
            return;
        }
        var (credential, failure) = await CredentialOfAsync(http, target.Label);

        // Without a service, any credential with the 'services' scope passes: nginx protecting one app may not name it.
        var protectedService = target.Name is null || registry.FindByLabel(target.Name) is not { Protected: false };
        if (protectedService)
        {
            if (credential is null)
            {
                if (failure is null && target.Label is not null && GatewayMiddleware.IsBrowser(http.Request))
                    headers[LoginHeader] = $"{ServiceOrigins.StartPath}?returnUrl={Uri.EscapeDataString(target.ReturnUrl ?? "/")}";
                await CredentialAuthenticationHandler.WriteChallengeAsync(http, failure);
                return;
            }
            var needed = target.Name is null ? new ScopeRequirement(ScopeFlags.Services) : ScopeRequirement.ForService(target.Name);
            // A name no service has is allowed by 'services' alone, and is noted as that: names a client makes up must not
            // pile up in what the token is said to use.
            var recordAs = target.Name is not null && registry.FindByLabel(target.Name) is null ? new ScopeRequirement(ScopeFlags.Services) : needed;
            if (!credential.Exercise(needed, http, recordAs))
            {
                http.Features.Set(credential);
                await audit.EnqueueAsync(audit.Create(http, AuditEvents.GatewayDenied, target.Name, credential.Owner.Id, credential.TokenId,
                    new { service = target.Name, scopes = credential.Effective.ToString() }), http.RequestAborted);
                await CredentialAuthenticationHandler.WriteForbiddenAsync(http, needed);
                return;
            }
        }
        if (credential is not null)
            IdentityHeaders.Add(credential, (header, value) => headers[header] = value);
        // The client's cookies without Portcullis's, for the proxy to pass on instead of the Cookie header.
        if (http.Request.Headers.Cookie.Count > 0)
            headers[CookieHeader] = PortcullisCookies.Without(http.Request.Headers.Cookie);
        http.Response.StatusCode = StatusCodes.Status200OK;
    }

    /// <summary>
    /// <c>Authorization</c> (a bad one is refused as such); else the UI's session cookie (an application on Portcullis's own host); else, for a
    /// service host, the session cookie of that origin.
    /// </summary>
    private async ValueTask<(Credential? Credential, AuthFailure? Failure)> CredentialOfAsync(HttpContext http, string? label)
    {
        if (http.Request.Headers.Authorization.Count > 0)
        {
            // A proxy takes only 2xx, 401 and 403 from here (nginx turns anything else into a 500 for the user), and
            // Daeploy's CLI asks here whether its stored credential (perhaps none: "Bearer ") still works: a malformed
            // Authorization header is refused as a wrong one is, 401.
            var (bearer, failure) = await CredentialAuthenticationHandler.ReadAuthorizationAsync(http, verifier, metrics);
            return (bearer, failure is { Error: "invalid_request" } ? AuthFailure.InvalidToken(failure.Description) : failure);
        }
        var https = http.Request.IsHttps;
        var (cookie, service) = http.Request.Cookies[PortcullisCookies.Session(https)] is { Length: > 0 } session
            ? (session, (string?)null)
            : label is not null && http.Request.Cookies[PortcullisCookies.ServiceSession(https)] is { Length: > 0 } origin ? (origin, label) : (null, null);
        if (cookie is null)
            return (null, null);
        var result = await sessions.VerifyAsync(cookie, service, http.RequestAborted);
        metrics.CountVerification(result.Failure);
        // A session that has ended is as good as none: a browser is sent to log in again.
        return result.Credential is { } credential ? (credential, null) : (null, result.Failure == VerifyFailure.Unavailable ? AuthFailure.Unavailable : null);
    }
}
