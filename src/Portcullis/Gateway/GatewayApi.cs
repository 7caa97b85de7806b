using System.Buffers.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Gateway;

/// <summary>
/// The gateway's endpoints on Portcullis's own origin: forward-auth (<c>GET /auth/verify</c>) and the UI side of
/// the service-origin handshake (<c>GET /auth/handshake</c>). Forwarding itself is <see cref="GatewayMiddleware"/>.
/// </summary>
internal static partial class GatewayApi
{
    public static IEndpointRouteBuilder MapGateway(this IEndpointRouteBuilder app)
    {
        app.MapMethods("/auth/verify", ["GET", "HEAD"], VerifyAsync).WithTags("Gateway");
        app.MapGet("/auth/handshake", HandshakeAsync).WithTags("Gateway").ExcludeFromDescription();
        return app;
    }

    /// <summary>
    /// Forward-auth for nginx <c>auth_request</c>, Caddy <c>forward_auth</c> and Traefik <c>ForwardAuth</c>: 200 with the
    /// identity headers, 401 with a challenge (and, for a browser on a service's own host, where to log in), 403,
    /// 400 for a malformed or contradictory request, 503 when it cannot decide.
    /// </summary>
    private static async Task VerifyAsync(HttpContext http, ServiceRegistry registry, ServiceHosts hosts, TrustedProxies trusted, SessionStore sessions,
        IOptions<GatewayOptions> options, AuditLog audit, PrometheusMetrics metrics)
    {
        http.Response.Headers.CacheControl = "no-store";
        var target = ForwardAuthTarget.Read(http, options.Value.ForwardAuthSource, trusted, hosts, registry);
        if (target.Error is { } error)
        {
            await ProblemResponses.WriteAsync(http, StatusCodes.Status400BadRequest, "Bad request", error);
            return;
        }
        var credential = http.Features.Get<Credential>();
        var failure = http.Items[CredentialAuthenticationHandler.FailureKey] as AuthFailure;
        var https = http.Request.IsHttps || http.Request.Headers["X-Forwarded-Proto"].ToString() == "https" && trusted.Contains(http.Connection.RemoteIpAddress);
        // A browser on the application's own host brings the session cookie of that origin (docs/gateway.md, "Forward-auth").
        if (credential is null && failure is null && target.Label is { } label
            && http.Request.Cookies[PortcullisCookies.ServiceSession(https)] is { Length: > 0 } cookie)
        {
            var result = await sessions.VerifyAsync(cookie, label, http.RequestAborted);
            metrics.CountVerification(result.Failure);
            credential = result.Credential;
            if (result.Failure == VerifyFailure.Unavailable)
                failure = AuthFailure.Unavailable;
        }

        // Without a service, any credential with the 'services' scope passes: nginx protecting one app may not name it.
        var protectedService = target.Name is null || registry.FindByLabel(target.Name) is not { Protected: false };
        if (protectedService)
        {
            if (credential is null)
            {
                if (failure is null && target.Label is not null && GatewayMiddleware.IsBrowser(http.Request))
                    http.Response.Headers[LoginHeader] = $"{ServiceOrigins.StartPath}?returnUrl={Uri.EscapeDataString(target.ReturnUrl ?? "/")}";
                await CredentialAuthenticationHandler.WriteChallengeAsync(http, failure);
                return;
            }
            var needed = target.Name is null ? new ScopeRequirement(ScopeFlags.Services) : ScopeRequirement.ForService(target.Name);
            if (!credential.Allows(needed))
            {
                audit.Enqueue(audit.Create(http, AuditEvents.GatewayDenied, target.Name, credential.Owner.Id, credential.TokenId,
                    new { service = target.Name, scopes = credential.Effective.ToString() }));
                await CredentialAuthenticationHandler.WriteForbiddenAsync(http, needed);
                return;
            }
        }
        if (credential is not null)
            IdentityHeaders.Add(credential, (header, value) => http.Response.Headers[header] = value);
        http.Response.StatusCode = StatusCodes.Status200OK;
    }

    /// <summary>Where a proxy sends a browser that has no session on the application's host yet (a path on that host).</summary>
    public const string LoginHeader = "X-Portcullis-Login";

    /// <summary>
    /// The UI side of the service-origin handshake (<see cref="ServiceOrigins"/>): a person logged in here, who
    /// may use the service, is sent back to the service's origin with a single-use code; others log in first.
    /// </summary>
    private static async Task<IResult> HandshakeAsync(HttpContext http, ServiceRegistry registry, ServiceOrigins origins, AuditLog audit,
        string? service, string? state, string? returnUrl)
    {
        if (service is null || !Label().IsMatch(service) || state is not { Length: 43 } || !Base64Url.IsValid(state))
            return ProblemResponses.BadRequest("This link is incomplete. Open the service again to log in to it.");
        var name = registry.FindByLabel(service)?.Name ?? ServiceHosts.NameOf(service);
        var back = Web.WebPages.SafeReturnUrl(returnUrl) ?? "/";
        if (http.Features.Get<Credential>() is not { Kind: CredentialKinds.Session } person)
            return Results.Redirect("/login?returnUrl=" + Uri.EscapeDataString(http.Request.Path + http.Request.QueryString));
        if (!person.Allows(ScopeRequirement.ForService(name)))
        {
            audit.Enqueue(audit.Create(http, AuditEvents.GatewayDenied, name, person.Owner.Id, details: new { service = name, origin = true }));
            return ProblemResponses.Forbidden($"Your account may not use the service '{name}'. Ask an admin for access.");
        }
        var session = SessionStore.Digest(http.Request.Cookies[PortcullisCookies.Session(http.Request.IsHttps)]!);
        var code = await origins.IssueCodeAsync(http, session, person, service, state, http.RequestAborted);
        return Results.Redirect(origins.CallbackUrl(service, code, back));
    }

    [GeneratedRegex("^[a-z0-9-]{1,140}$")]
    private static partial Regex Label();
}
