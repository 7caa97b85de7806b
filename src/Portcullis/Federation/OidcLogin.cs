using System.Security.Claims;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.OpenIdConnect;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Protocols.OpenIdConnect;
using Portcullis.Audit;
using Portcullis.Data;
using Portcullis.Users;
using Portcullis.Web;

namespace Portcullis.Federation;

/// <summary>
/// Logging in to the web UI through an OpenID Provider (docs/single-sign-on.md): the framework's OpenID Connect handler,
/// one scheme per provider, runs the authorization code flow with PKCE, state and nonce. When it has checked the provider's
/// answer, Portcullis finds (or provisions) the person, applies the admin rule, and starts the same web session a password
/// login starts; the provider's tokens are never stored or logged.
/// </summary>
internal static partial class OidcLogin
{
    /// <summary>
    /// The scheme the handlers sign the provider's identity in to. Portcullis never does: it makes its own session when the
    /// ticket arrives and ends the request there, so this cookie is never written.
    /// </summary>
    private const string ExternalScheme = "portcullis-external";

    /// <summary>Which provider the web session came from (not a secret), so that logging out can offer the provider's logout.</summary>
    public const string ProviderCookie = "portcullis-sso";

    public static IServiceCollection AddOidcLogin(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<OidcProvidersOptions>().Configure<IConfiguration>((o, c) => o.Load(c.GetSection(OidcProvidersOptions.Section))).ValidateOnStart();
        services.AddSingleton<IValidateOptions<OidcProvidersOptions>, OidcProvidersOptionsValidator>();
        services.AddScoped<OidcAccounts>();
        // The handlers are registered now, from the same settings; a mistake in them stops the start through the validator.
        var configured = new OidcProvidersOptions();
        configured.Load(configuration.GetSection(OidcProvidersOptions.Section));
        if (configured.Providers.Count == 0)
            return services;
        var authentication = services.AddAuthentication().AddCookie(ExternalScheme);
        foreach (var provider in configured.Providers)
            authentication.AddOpenIdConnect(provider.Scheme, provider.DisplayName, o => Configure(o, provider));
        return services;
    }

    private static void Configure(OpenIdConnectOptions o, OidcProvider provider)
    {
        o.Authority = provider.Authority.ToString().TrimEnd('/');
        o.RequireHttpsMetadata = provider.Authority.Scheme == "https";
        o.ClientId = provider.ClientId;
        o.ClientSecret = provider.ClientSecret;
        o.ResponseType = OpenIdConnectResponseType.Code;
        // The answer comes back as a top-level GET, so the correlation and nonce cookies can be SameSite=Lax (a form_post
        // answer would need SameSite=None, which browsers refuse without HTTPS).
        o.ResponseMode = OpenIdConnectResponseMode.Query;
        o.UsePkce = true;
        o.CallbackPath = provider.CallbackPath;
        o.SignInScheme = ExternalScheme;
        o.SaveTokens = false;
        o.MapInboundClaims = false;
        o.DisableTelemetry = true;
        o.GetClaimsFromUserInfoEndpoint = true;
        o.Scope.Clear();
        foreach (var scope in provider.Scopes)
            o.Scope.Add(scope);
        // Claims the userinfo endpoint sends are kept only when mapped: the username, and what the admin rule reads.
        o.ClaimActions.MapUniqueJsonKey(provider.UsernameClaim, provider.UsernameClaim);
        foreach (var condition in provider.Admin ?? [])
            o.ClaimActions.MapJsonKey(condition.Claim, condition.Claim);
        o.TokenValidationParameters.NameClaimType = provider.UsernameClaim;
        foreach (var cookie in new[] { o.CorrelationCookie, o.NonceCookie })
        {
            cookie.SameSite = SameSiteMode.Lax;
            cookie.SecurePolicy = CookieSecurePolicy.SameAsRequest;
        }
        o.Events = new OpenIdConnectEvents
        {
            OnTicketReceived = context => TicketReceivedAsync(context, provider),
            OnRemoteFailure = context => RemoteFailureAsync(context, provider),
        };
    }

    public static IEndpointRouteBuilder MapOidcLogin(this IEndpointRouteBuilder app)
    {
        app.MapGet("/login/oidc/{name}", Start).AsWebPages();
        return app;
    }

    /// <summary>Sends the browser to the provider; it comes back to the provider's callback path, which the handler answers.</summary>
    private static IResult Start(string name, string? returnUrl, IOptions<OidcProvidersOptions> options, HttpContext http)
    {
        if (options.Value.Providers.FirstOrDefault(p => p.Name == name) is not { } provider)
            return PageResults.Render<Web.Pages.MessagePage>(http, new { Title = "Not found", Text = $"There is no login provider named '{name}'." }, StatusCodes.Status404NotFound);
        return Results.Challenge(new AuthenticationProperties { RedirectUri = WebPages.SafeReturnUrl(returnUrl) ?? "/" }, [provider.Scheme]);
    }

    private static async Task TicketReceivedAsync(TicketReceivedContext context, OidcProvider provider)
    {
        context.HandleResponse();
        var http = context.HttpContext;
        var (user, refusal) = await http.RequestServices.GetRequiredService<OidcAccounts>().ProvisionAsync(http, provider, context.Principal!);
        if (user is null)
        {
            http.Response.Redirect($"/login?sso={refusal}&provider={provider.Name}");
            return;
        }
        await WebPages.StartSessionAsync(http, user, provider.Source);
        http.Response.Cookies.Append(ProviderCookie, provider.Name, new CookieOptions
        {
            HttpOnly = true, SameSite = SameSiteMode.Lax, Secure = http.Request.IsHttps, Path = "/", IsEssential = true,
        });
        http.Response.Redirect(WebPages.SafeReturnUrl(context.ReturnUri) ?? "/");
    }

    /// <summary>
    /// A wrong or replayed <c>state</c>, a missing correlation cookie, a code the provider refuses, an ID token that does not
    /// verify, or the person cancelling at the provider: the login page says so, the details go to the log and the audit log.
    /// </summary>
    private static async Task RemoteFailureAsync(RemoteFailureContext context, OidcProvider provider)
    {
        context.HandleResponse();
        var http = context.HttpContext;
        var kind = context.Failure?.GetType().Name ?? "unknown";
        Log.LoginFailed(http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(OidcLogin)), provider.Name, kind, context.Failure?.Message ?? "");
        var audit = http.RequestServices.GetRequiredService<AuditLog>();
        await audit.EnqueueAsync(audit.Create(http, AuditEvents.LoginFailed, details: new { path = provider.Source, reason = kind }), http.RequestAborted);
        http.Response.Redirect($"/login?sso=failed&provider={provider.Name}");
    }

    /// <summary>What the login page says for a refused provider login (<c>?sso=</c>), in the person's terms.</summary>
    public static string? Explain(string? code, OidcProvider? provider)
    {
        var name = provider?.DisplayName ?? "the provider";
        return code switch
        {
            null => null,
            OidcAccounts.Disabled => "Your account is disabled. Ask an administrator.",
            OidcAccounts.NameTaken => $"An account with your username exists already and is not linked to {name}. Ask an administrator.",
            OidcAccounts.NotProvisioned => $"{name} knows you, but Portcullis has no account for you yet. Ask an administrator to create one with your username.",
            OidcAccounts.NoUsername => $"{name} did not send a username Portcullis can use (claim '{provider?.UsernameClaim}'). Ask an administrator.",
            _ => $"Logging in with {name} did not complete: the login may have expired, been used already or been cancelled. Try again.",
        };
    }

    /// <summary>The provider's logout (RP-initiated logout), coming back to this server's login page; null when it has none.</summary>
    public static async Task<string?> EndSessionUrlAsync(HttpContext http, OidcProvider provider, string publicUrl)
    {
        var options = http.RequestServices.GetRequiredService<IOptionsMonitor<OpenIdConnectOptions>>().Get(provider.Scheme);
        if (options.ConfigurationManager is null)
            return null;
        try
        {
            var metadata = await options.ConfigurationManager.GetConfigurationAsync(http.RequestAborted);
            if (string.IsNullOrEmpty(metadata.EndSessionEndpoint) || !Uri.TryCreate(metadata.EndSessionEndpoint, UriKind.Absolute, out var endSession)
                || endSession.Scheme is not ("https" or "http"))
                return null;
            return QueryHelpers.AddQueryString(endSession.ToString(), new Dictionary<string, string?>
            {
                ["client_id"] = provider.ClientId, ["post_logout_redirect_uri"] = publicUrl + "/login",
            });
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or HttpRequestException)
        {
            return null;
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "A login through {Provider} failed ({Kind}): {Message}")]
        public static partial void LoginFailed(ILogger logger, string provider, string kind, string message);
    }
}

/// <summary>Finds, links or provisions the person a provider vouches for, and applies the provider's admin rule.</summary>
internal sealed class OidcAccounts(PortcullisDb db, AuditLog audit, InvalidationBus invalidation, TimeProvider time)
{
    public const string Disabled = "disabled";
    public const string NameTaken = "taken";
    public const string NotProvisioned = "unknown";
    public const string NoUsername = "username";

    /// <summary>
    /// The person is found by the provider and their <c>sub</c>, never by name. At their first login they are provisioned
    /// (with <c>AutoProvision</c>), or linked to the account of that name an administrator made (without it); a name held by
    /// another account is never taken over. The admin rule, when there is one, is applied at every login.
    /// </summary>
    public async Task<(User? User, string? Refusal)> ProvisionAsync(HttpContext http, OidcProvider provider, ClaimsPrincipal principal)
    {
        var cancellationToken = http.RequestAborted;
        var now = time.GetUtcNow().UtcDateTime;
        var subject = principal.FindFirst("sub")?.Value;
        var username = principal.FindFirst(provider.UsernameClaim)?.Value;
        bool? admin = provider.Admin is { } rule
            ? rule.All(condition => principal.FindAll(condition.Claim).Any(claim => condition.Matches(claim.Value)))
            : null;
        if (string.IsNullOrEmpty(subject))
            return await RefuseAsync(http, provider, username, NoUsername);

        var user = await db.Users.FirstOrDefaultAsync(u => u.ExternalProvider == provider.Name && u.ExternalSubject == subject, cancellationToken);
        var created = false;
        var linked = false;
        if (user is null)
        {
            if (username is null || UsersApi.ValidateUsername(username) is not null)
                return await RefuseAsync(http, provider, username, NoUsername);
            var normalized = User.Normalize(username);
            var existing = await db.Users.FirstOrDefaultAsync(u => u.NormalizedUsername == normalized, cancellationToken);
            if (existing is not null)
            {
                // Only an account an administrator made for this purpose is linked: with AutoProvision off, a person's account
                // of that name that no provider holds yet. Otherwise a provider account named 'admin' would become the admin.
                if (provider.AutoProvision || existing.Kind != PrincipalKind.User || existing.ExternalProvider is not null)
                    return await RefuseAsync(http, provider, username, NameTaken);
                (existing.ExternalProvider, existing.ExternalSubject, existing.UpdatedAt) = (provider.Name, subject, now);
                user = existing;
                linked = true;
            }
            else if (!provider.AutoProvision)
            {
                return await RefuseAsync(http, provider, username, NotProvisioned);
            }
            else
            {
                user = new User
                {
                    Username = username, NormalizedUsername = normalized, Kind = PrincipalKind.User, IsAdmin = admin ?? false,
                    ExternalProvider = provider.Name, ExternalSubject = subject, CreatedAt = now, UpdatedAt = now,
                };
                db.Users.Add(user);
                created = true;
            }
        }
        if (user.IsDisabled)
            return await RefuseAsync(http, provider, user.Username, Disabled, user.Id);
        var adminChanged = !created && admin is { } isAdmin && isAdmin != user.IsAdmin;
        if (adminChanged)
            (user.IsAdmin, user.UpdatedAt) = (admin!.Value, now);
        try
        {
            await db.SaveChangesAsync(cancellationToken);
        }
        catch (DbUpdateException e) when (DatabaseFailures.IsUniqueViolation(e))
        {
            // Someone of that name (or this person, in another tab) was made a moment ago: as if it had been there first.
            db.ChangeTracker.Clear();
            return await RefuseAsync(http, provider, username, NameTaken);
        }
        if (created)
            db.AuditEvents.Add(audit.Create(http, AuditEvents.UserCreated, user.Username, user.Id, details: new { admin = user.IsAdmin, source = provider.Source }));
        else if (linked || adminChanged)
            db.AuditEvents.Add(audit.Create(http, AuditEvents.UserUpdated, user.Username, user.Id, details: new
            {
                source = provider.Source, linked = linked ? true : (bool?)null, admin = adminChanged ? user.IsAdmin : (bool?)null,
            }));
        await db.SaveChangesAsync(cancellationToken);
        if (adminChanged)
            await invalidation.PrincipalChangedAsync(user.Id, cancellationToken);
        return (user, null);
    }

    private async Task<(User?, string?)> RefuseAsync(HttpContext http, OidcProvider provider, string? username, string refusal, long? userId = null)
    {
        db.ChangeTracker.Clear();
        var subject = username is null ? null : username.Length <= 64 ? username : username[..64] + "…";
        db.AuditEvents.Add(audit.Create(http, AuditEvents.LoginFailed, subject, userId, details: new { path = provider.Source, reason = refusal }));
        await db.SaveChangesAsync(http.RequestAborted);
        return (null, refusal);
    }
}
