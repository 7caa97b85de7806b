using System.Net;
using System.Security.Claims;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Authorization.Policy;
using Microsoft.Extensions.Options;
using Portcullis.Security;
using Portcullis.Hosting;
using Portcullis.Tokens;

namespace Portcullis.Auth;

/// <summary>
/// Reads <c>Authorization: Bearer|token &lt;credential&gt;</c> (scheme case-insensitive; never the query
/// string) and answers failures as RFC 6750 §3 says: 401 with <c>WWW-Authenticate</c>, <c>error="invalid_token"</c>
/// for a bad credential, 400 <c>invalid_request</c> for a malformed header, 503 when the database is needed and down.
/// </summary>
internal sealed class CredentialAuthenticationHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options,
    ILoggerFactory logger,
    UrlEncoder encoder,
    CredentialVerifier verifier,
    SessionStore sessions,
    Hosting.PortcullisMetrics metrics)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    public const string SchemeName = "Portcullis";
    public const string Realm = "portcullis";
    /// <summary>Where a failed credential's <see cref="AuthFailure"/> is kept for the request (anonymous endpoints read it too).</summary>
    internal const string FailureKey = "portcullis.auth_failure";

    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (Request.Headers.Authorization.Count == 0)
            return await AuthenticateSessionAsync();
        var (credential, failure) = await ReadAuthorizationAsync(Context, verifier, metrics);
        if (failure is not null)
            return Fail(failure);
        // Not a scheme we speak (e.g. Basic): as if no credential was sent.
        return credential is null ? AuthenticateResult.NoResult() : Success(Context, credential, Scheme.Name);
    }

    /// <summary>
    /// The credential of <c>Authorization: Bearer|token &lt;credential&gt;</c>: (credential, null) when valid,
    /// (null, failure) when malformed or refused, (null, null) when there is none in a scheme Portcullis speaks.
    /// The gateway calls this directly; everything else goes through the authentication middleware.
    /// </summary>
    public static async ValueTask<(Credential? Credential, AuthFailure? Failure)> ReadAuthorizationAsync(
        HttpContext http, CredentialVerifier verifier, Hosting.PortcullisMetrics metrics)
    {
        var headers = http.Request.Headers.Authorization;
        if (headers.Count == 0)
            return (null, null);
        if (headers.Count > 1)
            return (null, AuthFailure.InvalidRequest("Send exactly one Authorization header."));

        var header = headers[0] ?? "";
        var space = header.IndexOf(' ');
        var scheme = space < 0 ? header : header[..space];
        if (!scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase) && !scheme.Equals("token", StringComparison.OrdinalIgnoreCase))
            return (null, null);
        var token = space < 0 ? "" : header[(space + 1)..].Trim();
        if (token.Length == 0)
            return (null, AuthFailure.InvalidRequest($"The Authorization header names the {scheme} scheme but carries no credential."));
        if (token.Length > 8192 || token.AsSpan().IndexOfAny(' ', '\t') >= 0)
            return (null, AuthFailure.InvalidToken("The credential is malformed."));

        var address = http.ClientAddress();
        var result = await verifier.VerifyAsync(token, address, http.RequestAborted);
        metrics.CountVerification(result.Failure);
        return result.Credential is { } credential ? (credential, null) : (null, result.Failure switch
        {
            VerifyFailure.DeniedSource => AuthFailure.DeniedSource(address),
            VerifyFailure.RateLimited => AuthFailure.RateLimited(result.Throttled!),
            _ => FailureOf(result.Failure),
        });
    }

    /// <summary>The credential of a well-formed <c>Authorization: Bearer|token</c> header, or null.</summary>
    public static string? BearerOf(HttpRequest request)
    {
        if (request.Headers.Authorization is not { Count: 1 } headers || headers[0] is not { } header)
            return null;
        var space = header.IndexOf(' ');
        if (space < 0)
            return null;
        var scheme = header.AsSpan(0, space);
        return scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase) || scheme.Equals("token", StringComparison.OrdinalIgnoreCase)
            ? header[(space + 1)..].Trim() : null;
    }

    public static AuthFailure FailureOf(VerifyFailure failure) => failure switch
    {
        VerifyFailure.Unavailable => AuthFailure.Unavailable,
        VerifyFailure.Expired => AuthFailure.InvalidToken("The token has expired."),
        VerifyFailure.OwnerDisabled => AuthFailure.InvalidToken("The account that owns this token is disabled."),
        VerifyFailure.Spent => AuthFailure.InvalidToken("The token has been used as many times as it allows."),
        _ => AuthFailure.InvalidToken("The token is invalid or has been revoked."),
    };

    /// <summary>The web UI's session cookie, when no Authorization header was sent (docs/decisions.md).</summary>
    private async Task<AuthenticateResult> AuthenticateSessionAsync()
    {
        var id = Request.Cookies[PortcullisCookies.Session(SessionStore.IsSecure(Context))];
        if (string.IsNullOrEmpty(id))
            return AuthenticateResult.NoResult();
        var result = await sessions.VerifyAsync(id, Context.RequestAborted);
        metrics.CountVerification(result.Failure);
        if (result.Credential is not { } credential)
        {
            return Fail(result.Failure == VerifyFailure.Unavailable
                ? AuthFailure.Unavailable
                : AuthFailure.InvalidToken("The session has ended. Log in again."));
        }
        return Success(Context, credential, Scheme.Name);
    }

    public static AuthenticateResult Success(HttpContext context, Credential credential, string scheme)
    {
        context.Features.Set(credential);
        var identity = new ClaimsIdentity(
            [new Claim(ClaimTypes.Name, credential.Owner.Name), new Claim("credential_kind", credential.Kind)], scheme, ClaimTypes.Name, null);
        return AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), scheme));
    }

    private AuthenticateResult Fail(AuthFailure failure)
    {
        Context.Items[FailureKey] = failure;
        return AuthenticateResult.Fail(failure.Description);
    }

    protected override Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        var failure = Context.Items[FailureKey] as AuthFailure;
        return WriteChallengeAsync(Context, failure);
    }

    public static async Task WriteChallengeAsync(HttpContext context, AuthFailure? failure)
    {
        if (failure == AuthFailure.Unavailable)
        {
            context.Response.Headers.RetryAfter = "5";
            await ProblemResponses.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "Service unavailable",
                "The credential cannot be checked right now because the database does not answer. Try again shortly.");
            return;
        }
        if (failure?.Throttled is { } throttled)
        {
            var headers = context.Response.Headers;
            headers.RetryAfter = throttled.RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            headers["RateLimit-Policy"] = throttled.PolicyHeader;
            headers["RateLimit"] = throttled.StateHeader;
            await ProblemResponses.WriteAsync(context, StatusCodes.Status429TooManyRequests, "Too many requests", failure.Description);
            return;
        }
        if (failure?.Status == StatusCodes.Status403Forbidden)
        {
            // The credential is good but may not be used from here: no challenge, as no other credential is asked for.
            await ProblemResponses.WriteAsync(context, failure.Status, "Forbidden", failure.Description);
            return;
        }
        var header = $"Bearer realm=\"{Realm}\"";
        if (failure is not null)
            header += $", error=\"{failure.Error}\", error_description=\"{failure.Description}\"";
        context.Response.Headers.WWWAuthenticate = header;
        var status = failure?.Status ?? StatusCodes.Status401Unauthorized;
        await ProblemResponses.WriteAsync(context, status, status == 400 ? "Bad request" : "Unauthorized",
            failure?.Description ?? "Authentication is required. Send 'Authorization: Bearer <token>' with an API token or access token.");
    }

    public static async Task WriteForbiddenAsync(HttpContext context, ScopeRequirement? missing)
    {
        var scope = missing?.ScopeName ?? Scopes.Admin;
        context.Response.Headers.WWWAuthenticate =
            $"Bearer realm=\"{Realm}\", error=\"insufficient_scope\", error_description=\"The credential lacks the scope this request needs.\", scope=\"{scope}\"";
        await ProblemResponses.WriteAsync(context, StatusCodes.Status403Forbidden, "Forbidden",
            $"This request needs the '{scope}' scope, which this credential (or its owner) does not have.");
    }
}

/// <summary>An endpoint's answer for a refused credential, written as the authentication handler writes it.</summary>
internal sealed class AuthFailureResult(AuthFailure failure) : IResult
{
    public Task ExecuteAsync(HttpContext httpContext) => CredentialAuthenticationHandler.WriteChallengeAsync(httpContext, failure);
}

/// <summary>Why a credential was refused, and the status that says so (401 unless stated).</summary>
internal sealed record AuthFailure(string Error, string Description, int Status = StatusCodes.Status401Unauthorized)
{
    /// <summary>For a token over its rate limit, which limit and when to try again.</summary>
    public RateLimitRefusal? Throttled { get; init; }

    /// <summary>Whether the answer is a refusal of a valid credential (403, 429) rather than a challenge for another one.</summary>
    public bool IsRefusal => Status is StatusCodes.Status403Forbidden or StatusCodes.Status429TooManyRequests;

    public static readonly AuthFailure Unavailable = new("temporarily_unavailable", "The database does not answer.", StatusCodes.Status503ServiceUnavailable);

    public static AuthFailure InvalidRequest(string description) => new("invalid_request", description, StatusCodes.Status400BadRequest);

    public static AuthFailure InvalidToken(string description) => new("invalid_token", description);

    /// <summary>A valid token presented from outside its allowed ranges (docs/token-policies.md): 403, with the address.</summary>
    public static AuthFailure DeniedSource(IPAddress? address) =>
        new("access_denied", $"This token may not be used from {address?.ToString() ?? "an unknown address"}: it is limited to the addresses in its allowed_cidrs.",
            StatusCodes.Status403Forbidden);

    /// <summary>A valid token used faster than its rate limit allows (docs/token-policies.md): 429.</summary>
    public static AuthFailure RateLimited(RateLimitRefusal refusal) =>
        new("rate_limited", refusal.Description, StatusCodes.Status429TooManyRequests) { Throttled = refusal };
}

/// <summary>Requires one scope of the credential and of its owner's current rights.</summary>
internal sealed class ScopeAuthorizationRequirement(ScopeRequirement scope)
    : AuthorizationHandler<ScopeAuthorizationRequirement>, IAuthorizationRequirement
{
    public ScopeRequirement Scope { get; } = scope;

    protected override Task HandleRequirementAsync(AuthorizationHandlerContext context, ScopeAuthorizationRequirement requirement)
    {
        if (context.Resource is HttpContext http && http.Features.Get<Credential>() is { } credential && credential.Exercise(requirement.Scope, http))
            context.Succeed(requirement);
        return Task.CompletedTask;
    }
}

/// <summary>Turns authorization failures into RFC 6750 answers that name the missing scope.</summary>
internal sealed class ScopeAwareResultHandler : IAuthorizationMiddlewareResultHandler
{
    private readonly AuthorizationMiddlewareResultHandler _default = new();

    public async Task HandleAsync(RequestDelegate next, HttpContext context, AuthorizationPolicy policy, PolicyAuthorizationResult authorizeResult)
    {
        if (authorizeResult.Forbidden && context.Features.Get<Credential>() is not null)
        {
            var missing = authorizeResult.AuthorizationFailure?.FailedRequirements.OfType<ScopeAuthorizationRequirement>().FirstOrDefault()?.Scope;
            await CredentialAuthenticationHandler.WriteForbiddenAsync(context, missing);
            return;
        }
        await _default.HandleAsync(next, context, policy, authorizeResult);
    }
}

internal static class Policies
{
    public const string Authenticated = "authenticated";
    public const string Api = "api";
    public const string Admin = "admin";

    public static void Add(AuthorizationOptions options)
    {
        options.AddPolicy(Authenticated, p => p.RequireAuthenticatedUser());
        options.AddPolicy(Api, p => p.RequireAuthenticatedUser().AddRequirements(new ScopeAuthorizationRequirement(ScopeRequirement.Api)));
        options.AddPolicy(Admin, p => p.RequireAuthenticatedUser()
            .AddRequirements(new ScopeAuthorizationRequirement(ScopeRequirement.Api), new ScopeAuthorizationRequirement(ScopeRequirement.Admin)));
    }
}

internal static class HttpContextCredentialExtensions
{
    /// <summary>The credential of an endpoint that requires authentication.</summary>
    public static Credential Credential(this HttpContext context) =>
        context.Features.Get<Credential>() ?? throw new InvalidOperationException("Endpoint requires authentication.");
}
