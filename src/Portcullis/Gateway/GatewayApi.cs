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
        // Answered by GatewayMiddleware ahead of the pipeline; mapped here so that it is documented and other methods get 405.
        app.MapMethods("/auth/verify", ["GET", "HEAD"], (HttpContext http, ForwardAuth forwardAuth) => forwardAuth.VerifyAsync(http)).WithTags("Gateway")
            .Answers((StatusCodes.Status400BadRequest, "The service cannot be told from the request, or two headers disagree."),
                (StatusCodes.Status401Unauthorized, "No credential, or a malformed, invalid, expired or revoked one."),
                (StatusCodes.Status403Forbidden, "The credential may not reach this service."),
                (StatusCodes.Status503ServiceUnavailable, "The credential cannot be checked: the database does not answer."));
        app.MapGet("/auth/handshake", HandshakeAsync).WithTags("Gateway").ExcludeFromDescription();
        return app;
    }

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
            await audit.EnqueueAsync(audit.Create(http, AuditEvents.GatewayDenied, name, person.Owner.Id, details: new { service = name, origin = true }), http.RequestAborted);
            return ProblemResponses.Forbidden($"Your account may not use the service '{name}'. Ask an admin for access.");
        }
        var session = SessionStore.Digest(http.Request.Cookies[PortcullisCookies.Session(http.Request.IsHttps)]!);
        var code = await origins.IssueCodeAsync(http, session, person, service, state, http.RequestAborted);
        return Results.Redirect(origins.CallbackUrl(service, code, back));
    }

    [GeneratedRegex("^[a-z0-9-]{1,140}$")]
    private static partial Regex Label();
}
