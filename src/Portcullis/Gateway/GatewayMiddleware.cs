using Microsoft.AspNetCore.Http.Features;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Gateway;

/// <summary>
/// The gateway (docs/gateway.md), ahead of the rest of the pipeline: nothing of the UI's or the API's middleware
/// applies to what a service serves, and the checks below are all a forwarded request goes through.
/// <list type="bullet">
/// <item><b>Service origins</b> (a host matching <c>Gateway:ServiceHost</c>, e.g. <c>model.localhost</c>): everything
/// on that host is the service's, but for <c>/.portcullis/*</c>. Credentials: <c>Authorization</c>, or the session
/// cookie of that origin, which a browser gets through the handshake of <see cref="ServiceOrigins"/>.</item>
/// <item><b>Path mode</b> (<c>/services/{name}[_{version}]/...</c> on any other host), for programs: only
/// <c>Authorization</c>, never a cookie; every answer sandboxed; a browser is sent to the service's origin.</item>
/// </list>
/// </summary>
internal sealed class GatewayMiddleware(
    RequestDelegate next,
    ServiceRegistry registry,
    ServiceHosts hosts,
    ServiceOrigins origins,
    GatewayForwarder forwarder,
    CredentialVerifier verifier,
    SessionStore sessions,
    ForwardAuth forwardAuth,
    LiveForwards live,
    PortcullisMetrics metrics,
    AuditLog audit,
    PublicUrl publicUrl)
{
    public const string PathPrefix = "/services/";

    public Task InvokeAsync(HttpContext http)
    {
        if (hosts.LabelOf(http.Request.Host) is { } label)
            return CountedAsync(http, "{service-origin}", ServiceOriginAsync(http, label));
        var path = http.Request.Path.Value;
        if (path == ForwardAuth.Path && (HttpMethods.IsGet(http.Request.Method) || HttpMethods.IsHead(http.Request.Method)))
            return CountedAsync(http, ForwardAuth.Path, forwardAuth.VerifyAsync(http));
        // "/services/" alone is not a service (the UI's /services page and the API list them), nor is Daeploy's inspection.
        if (path is not null && path.Length > PathPrefix.Length && path.StartsWith(PathPrefix, StringComparison.Ordinal) && path != Compat.DaeployApi.InspectionPath)
            return CountedAsync(http, "/services/{target}/{**path}", PathModeAsync(http, path));
        return next(http);
    }

    private async Task CountedAsync(HttpContext http, string route, Task handling)
    {
        // The upstream's statuses and bodies pass as they are: no status-code page of ours on top.
        try
        {
            await handling;
        }
        finally
        {
            metrics.CountRequest(route, http.Response.StatusCode);
        }
    }

    private async Task ServiceOriginAsync(HttpContext http, string label)
    {
        var path = http.Request.Path.Value ?? "/";
        if (path.StartsWith(ServiceOrigins.ReservedPrefix + "/", StringComparison.Ordinal) || path == ServiceOrigins.ReservedPrefix)
        {
            http.Response.Headers.CacheControl = "no-store";
            var result = path switch
            {
                ServiceOrigins.CallbackPath when HttpMethods.IsGet(http.Request.Method) => await origins.CallbackAsync(http, label, http.RequestAborted),
                ServiceOrigins.StartPath when HttpMethods.IsGet(http.Request.Method) => origins.Start(http, label, http.Request.Query["returnUrl"], publicUrl.Value),
                _ => TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Not found", detail: $"Paths under {ServiceOrigins.ReservedPrefix}/ belong to Portcullis."),
            };
            await result.ExecuteAsync(http);
            return;
        }
        if (registry.FindByLabel(label) is not { } service)
        {
            await ProblemResponses.WriteAsync(http, StatusCodes.Status404NotFound, "Not found",
                $"There is no service '{label}'. GET /api/v1/services on Portcullis lists the services you may reach.");
            return;
        }

        Credential? credential = null;
        AuthFailure? failure = null;
        var https = http.Request.IsHttps;
        if (http.Request.Headers.Authorization.Count > 0)
        {
            (credential, failure) = await CredentialAuthenticationHandler.ReadAuthorizationAsync(http, verifier, metrics);
        }
        else if (http.Request.Cookies[PortcullisCookies.ServiceSession(https)] is { Length: > 0 } cookie)
        {
            var result = await sessions.VerifyAsync(cookie, label, http.RequestAborted);
            metrics.CountVerification(result.Failure);
            credential = result.Credential;
            if (credential is null && result.Failure == VerifyFailure.Unavailable)
                failure = AuthFailure.Unavailable;
            else if (credential is null)
                http.Response.Cookies.Delete(PortcullisCookies.ServiceSession(https), PortcullisCookies.Options(https, null));
        }

        if (service.Protected)
        {
            if (credential is null && failure is null && IsBrowser(http.Request))
            {
                // A person: through the UI origin's login, and back here with a session of this origin.
                await origins.Start(http, label, http.Request.Path + http.Request.QueryString, publicUrl.Value).ExecuteAsync(http);
                return;
            }
            if (await DeniedAsync(http, service.Name, credential, failure))
                return;
        }
        await ForwardWatchedAsync(http, service, path, prefix: null, credential, sandbox: false,
            http.Request.Headers.Authorization.Count > 0 ? null : http.Request.Cookies[PortcullisCookies.ServiceSession(https)], label);
    }

    private async Task PathModeAsync(HttpContext http, string path)
    {
        var slash = path.IndexOf('/', PathPrefix.Length);
        var target = slash < 0 ? path[PathPrefix.Length..] : path[PathPrefix.Length..slash];
        if (registry.Find(target) is not { } service)
        {
            await ProblemResponses.WriteAsync(http, StatusCodes.Status404NotFound, "Not found",
                $"There is no service '{target}'. GET /api/v1/services lists the services you may reach.");
            return;
        }
        // A browser uses the service on its own origin, where its pages cannot act in Portcullis's.
        if (IsBrowser(http.Request))
        {
            var label = target.Contains('_') ? service.Label : service.Name;
            http.Response.Redirect(hosts.Origin(label) + (slash < 0 ? "/" : path[slash..]) + http.Request.QueryString);
            return;
        }
        // /services/name → /services/name/, so that the service's relative links resolve under it.
        if (slash < 0)
        {
            http.Response.StatusCode = StatusCodes.Status307TemporaryRedirect;
            http.Response.Headers.Location = path + "/" + http.Request.QueryString;
            return;
        }
        // Only the Authorization header: a cookie here could be the web session, sent by a page of another service.
        var (credential, failure) = await CredentialAuthenticationHandler.ReadAuthorizationAsync(http, verifier, metrics);
        if (service.Protected && await DeniedAsync(http, service.Name, credential, failure))
            return;
        await ForwardWatchedAsync(http, service, path[slash..], PathPrefix + target, credential, sandbox: true, cookie: null, label: null);
    }

    /// <summary>
    /// Forwards, and keeps checking the credential while the request lasts (<see cref="LiveForwards"/>): what ends
    /// the credential ends the WebSocket or the download too.
    /// </summary>
    private async Task ForwardWatchedAsync(HttpContext http, ServiceEntry service, string path, string? prefix, Credential? credential, bool sandbox,
        string? cookie, string? label)
    {
        if (credential is null || !service.Protected)
        {
            await forwarder.ForwardAsync(http, service, path, prefix, credential, sandbox);
            return;
        }
        var needed = ScopeRequirement.ForService(service.Name);
        var token = cookie is null ? CredentialAuthenticationHandler.BearerOf(http.Request) : null;
        var id = live.Add(http, service.Key, async cancellationToken =>
        {
            var result = token is not null ? await verifier.InspectAsync(token, cancellationToken)
                : cookie is not null ? await sessions.VerifyAsync(cookie, label, cancellationToken)
                : default;
            return result.Failure == VerifyFailure.Unavailable || result.Credential?.Allows(needed) == true;
        });
        try
        {
            await forwarder.ForwardAsync(http, service, path, prefix, credential, sandbox);
        }
        finally
        {
            live.Remove(id);
        }
    }

    /// <summary>Answers the request when the credential may not reach the service; returns whether it did.</summary>
    private async Task<bool> DeniedAsync(HttpContext http, string service, Credential? credential, AuthFailure? failure)
    {
        if (credential is null)
        {
            await CredentialAuthenticationHandler.WriteChallengeAsync(http, failure);
            return true;
        }
        var needed = ScopeRequirement.ForService(service);
        if (credential.Exercise(needed, http))
            return false;
        http.Features.Set(credential);
        await audit.EnqueueAsync(audit.Create(http, AuditEvents.GatewayDenied, service, credential.Owner.Id, credential.TokenId,
            new { service, scopes = credential.Effective.ToString() }), http.RequestAborted);
        await CredentialAuthenticationHandler.WriteForbiddenAsync(http, needed);
        return true;
    }

    /// <summary>A person's browser asking for a page: GET or HEAD, accepting HTML, and no Authorization header (programs send one).</summary>
    internal static bool IsBrowser(HttpRequest request) =>
        (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method))
        && request.Headers.Authorization.Count == 0
        && request.Headers.Accept.ToString().Contains("text/html", StringComparison.OrdinalIgnoreCase);
}
