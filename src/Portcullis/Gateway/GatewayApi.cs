using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http.Features;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Gateway;

/// <summary>
/// The gateway (<c>/services/{name}_{version}/...</c>, <c>/services/{name}/...</c>) and forward-auth
/// (<c>GET /auth/verify</c>), SPEC §5. Both take the same decision: which service, which credential
/// (already verified by the authentication middleware, from memory), and whether it may reach it.
/// </summary>
internal static class GatewayApi
{
    public static IEndpointRouteBuilder MapGateway(this IEndpointRouteBuilder app)
    {
        app.Map("/services/{target}/{**path}", ForwardAsync).WithTags("Gateway").ExcludeFromDescription();
        app.MapMethods("/auth/verify", ["GET", "HEAD"], VerifyAsync).WithTags("Gateway");
        return app;
    }

    private static async Task ForwardAsync(HttpContext http, string target, ServiceRegistry registry, Forwarder forwarder, AuditLog audit)
    {
        // The upstream's status codes and bodies pass as they are: no status-code page of ours on top.
        if (http.Features.Get<IStatusCodePagesFeature>() is { } pages)
            pages.Enabled = false;
        if (registry.Find(target) is not { } service)
        {
            await ProblemResponses.WriteAsync(http, StatusCodes.Status404NotFound, "Not found",
                $"There is no service '{target}'. GET /api/v1/services lists the services you may reach.");
            return;
        }
        // The upstream gets exactly the path that was authorised. An encoded '/' or '\' is where proxies and
        // servers disagree about what a path means, so it is refused rather than interpreted.
        if (HasAmbiguousEncoding(http.Features.Get<IHttpRequestFeature>()?.RawTarget))
        {
            await ProblemResponses.WriteAsync(http, StatusCodes.Status400BadRequest, "Bad request",
                "The path contains an encoded '/', '\\' or NUL (%2F, %5C, %00), which the gateway does not forward.");
            return;
        }
        // /services/name → /services/name/, so that the service's relative links resolve under it.
        if (http.Request.Path.Value is { } p && !p.EndsWith('/') && http.Request.RouteValues["path"] is null)
        {
            http.Response.StatusCode = StatusCodes.Status307TemporaryRedirect;
            http.Response.Headers.Location = p + "/" + http.Request.QueryString;
            return;
        }
        var credential = http.Features.Get<Credential>();
        if (service.Protected && await DenyAsync(http, service.Name, credential, audit, redirectBrowsers: true))
            return;
        await forwarder.ForwardAsync(http, service, "/services/" + target, credential);
    }

    /// <summary>
    /// Forward-auth for nginx <c>auth_request</c>, Caddy <c>forward_auth</c> and Traefik <c>ForwardAuth</c>:
    /// 200 with the identity headers, 401 with a challenge, 403, or 503 when it cannot decide.
    /// </summary>
    private static async Task VerifyAsync(HttpContext http, ServiceRegistry registry, TrustedProxies trusted, AuditLog audit)
    {
        http.Response.Headers.CacheControl = "no-store";
        var name = ServiceFromRequest(http, trusted);
        if (name is { Length: 0 })
        {
            await ProblemResponses.WriteAsync(http, StatusCodes.Status400BadRequest, "Bad request",
                "The service named by ?service= or X-Original-URI is not a valid service name.");
            return;
        }
        var credential = http.Features.Get<Credential>();
        // Without a service, any credential with the 'services' scope passes: nginx protecting one app may not name it.
        var protectedService = name is null || registry.Find(name) is not { Protected: false };
        if (protectedService && await DenyAsync(http, name, credential, audit, redirectBrowsers: false))
            return;
        if (credential is not null)
            Forwarder.AddIdentityHeaders(credential, (header, value) => http.Response.Headers[header] = value);
        http.Response.StatusCode = StatusCodes.Status200OK;
    }

    /// <summary>Answers the request when the credential may not reach the service; returns whether it did.</summary>
    private static async Task<bool> DenyAsync(HttpContext http, string? service, Credential? credential, AuditLog audit, bool redirectBrowsers)
    {
        if (credential is null)
        {
            var failure = http.Items[CredentialAuthenticationHandler.FailureKey] as AuthFailure;
            if (failure is null && redirectBrowsers && WantsHtml(http.Request))
            {
                // A person in a browser: to the login page, and back here afterwards (a local path only).
                var returnUrl = http.Request.PathBase + http.Request.Path + http.Request.QueryString;
                http.Response.Redirect("/login?returnUrl=" + Uri.EscapeDataString(returnUrl));
                return true;
            }
            await CredentialAuthenticationHandler.WriteChallengeAsync(http, failure);
            return true;
        }
        var needed = service is null ? new ScopeRequirement(ScopeFlags.Services) : ScopeRequirement.ForService(service);
        if (credential.Allows(needed))
            return false;
        audit.Enqueue(audit.Create(http, AuditEvents.GatewayDenied, service, credential.Owner.Id, credential.TokenId,
            new { service, scopes = credential.Effective.ToString() }));
        await CredentialAuthenticationHandler.WriteForbiddenAsync(http, needed);
        return true;
    }

    /// <summary>
    /// The service a forward-auth request is about: <c>?service=</c>, else the first segment after
    /// <c>/services/</c> in <c>X-Original-URI</c> / <c>X-Forwarded-Uri</c>, believed only from a trusted proxy.
    /// Null when none is named; empty when what is named is not a service name.
    /// </summary>
    internal static string? ServiceFromRequest(HttpContext http, TrustedProxies trusted)
    {
        if (http.Request.Query["service"] is { Count: > 0 } named)
            return ServiceRules.Name().IsMatch(named.ToString()) ? named.ToString() : "";
        if (!trusted.Contains(http.Connection.RemoteIpAddress))
            return null;
        var uri = http.Request.Headers["X-Original-URI"] is { Count: > 0 } original ? original.ToString() : http.Request.Headers["X-Forwarded-Uri"].ToString();
        if (uri.Length == 0)
            return null;
        if (HasAmbiguousEncoding(uri))
            return "";
        // Normalised like the upstream will see it: dot segments resolved, the query cut off.
        var path = new Uri(new Uri("http://x"), uri.Split('?', 2)[0]).AbsolutePath;
        if (!path.StartsWith("/services/", StringComparison.Ordinal))
            return null;
        var segment = Uri.UnescapeDataString(path["/services/".Length..].Split('/', 2)[0]);
        var name = segment.Split('_', 2)[0];
        return ServiceRules.Name().IsMatch(name) ? name : "";
    }

    private static bool HasAmbiguousEncoding(string? raw) =>
        raw is not null && (raw.Contains("%2f", StringComparison.OrdinalIgnoreCase) || raw.Contains("%5c", StringComparison.OrdinalIgnoreCase)
            || raw.Contains("%00", StringComparison.Ordinal) || raw.Contains("%252f", StringComparison.OrdinalIgnoreCase) || raw.Contains('\\'));

    private static bool WantsHtml(HttpRequest request) =>
        (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method))
        && request.Headers.Accept.ToString().Contains("text/html", StringComparison.OrdinalIgnoreCase);
}
