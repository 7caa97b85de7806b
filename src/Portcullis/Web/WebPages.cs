using System.Text;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.FileProviders;
using Microsoft.EntityFrameworkCore;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Federation;
using Portcullis.Gateway;
using Portcullis.Security;
using Portcullis.Users;
using Portcullis.Web.Pages;
using Portcullis.OAuth;

namespace Portcullis.Web;

/// <summary>A link the login page shows: to log in through a provider, or out of one.</summary>
public sealed record LoginProviderLink(string Name, string Url);

/// <summary>How people may log in to the web UI: with a password (<c>Auth:LocalLogin</c>), through these providers, or both.</summary>
internal sealed record LoginMethods(bool LocalLogin, IReadOnlyList<OidcProvider> Providers);

/// <summary>
/// The web UI's entry: <c>/login</c>, <c>/logout</c> and the home page (docs/web-ui.md), server-rendered, usable
/// without JavaScript. A login makes a server-side session (<see cref="SessionStore"/>) whose cookie
/// the API and the gateway accept too.
/// </summary>
internal static class WebPages
{
    /// <summary>
    /// The pages are Razor components rendered on the server (<see cref="PageResults"/>); no interactivity, no circuit. Their forms,
    /// and API calls made with the session, carry an antiforgery token.
    /// </summary>
    public static IServiceCollection AddWebPages(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<WebOptions>().Bind(configuration.GetSection(WebOptions.Section));
        services.AddOptions<AntiforgeryOptions>().Configure<PublicUrl>((o, url) =>
        {
            // Under HTTPS (or behind a proxy that terminates it, per PublicUrl): Secure and __Host-, like the session cookie.
            var https = url.Value.StartsWith("https://", StringComparison.OrdinalIgnoreCase);
            o.Cookie.Name = PortcullisCookies.Antiforgery(https);
            o.Cookie.SecurePolicy = https ? CookieSecurePolicy.Always : CookieSecurePolicy.SameAsRequest;
            o.Cookie.SameSite = SameSiteMode.Strict;
            o.Cookie.HttpOnly = true;
            o.Cookie.Path = "/";
            o.HeaderName = "X-CSRF-Token";
            o.FormFieldName = "csrf_token";
        });
        services.AddAntiforgery();
        services.AddSingleton(sp => new LoginMethods(sp.GetRequiredService<IOptions<AuthOptions>>().Value.LocalLogin,
            sp.GetRequiredService<IOptions<OidcProvidersOptions>>().Value.Providers));
        services.AddRazorComponents();
        return services;
    }

    /// <summary>
    /// <c>/static/*</c>: the stylesheet and the script, from <c>wwwroot</c> embedded in the program. Browsers revalidate
    /// them (<c>no-cache</c>) against the ETag, so an upgrade is seen at once.
    /// </summary>
    public static IApplicationBuilder UseWebStaticFiles(this IApplicationBuilder app) =>
        app.UseStaticFiles(new StaticFileOptions
        {
            FileProvider = new EmbeddedFileProvider(typeof(WebPages).Assembly, "Portcullis.wwwroot"),
            OnPrepareResponse = context => context.Context.Response.Headers.CacheControl = "no-cache",
        });

    public static IEndpointRouteBuilder MapWebPages(this IEndpointRouteBuilder app)
    {
        var pages = app.MapGroup("").AsWebPages();
        pages.MapGet("/", Home);
        pages.MapGet("/login", LoginForm);
        pages.MapPost("/login", LoginAsync).DisableAntiforgery();
        pages.MapGet("/logout", LogoutForm);
        pages.MapPost("/logout", LogoutAsync).DisableAntiforgery();
        return app;
    }

    /// <summary>
    /// When clients reach Portcullis over HTTPS (<c>PublicUrl</c> is https://), the pages are only served over
    /// HTTPS, so that their cookies can be <c>Secure</c> and <c>__Host-</c>: a page asked for over plain HTTP is
    /// redirected there. Behind a proxy that terminates TLS, the proxy says so with <c>X-Forwarded-Proto</c>.
    /// Only in the pipeline when <c>PublicUrl</c> is https.
    /// </summary>
    public static Task HttpsForPages(HttpContext http, Func<Task> next)
    {
        if (!http.Request.IsHttps && http.IsWebPage())
        {
            var publicUrl = http.RequestServices.GetRequiredService<PublicUrl>().Value;
            http.Response.StatusCode = StatusCodes.Status308PermanentRedirect;
            http.Response.Headers.Location = publicUrl + http.Request.Path + http.Request.QueryString;
            return Task.CompletedTask;
        }
        return next();
    }

    /// <summary>
    /// A request to the API carried by the session cookie, other than GET/HEAD/OPTIONS, must carry the
    /// antiforgery token (header <c>X-CSRF-Token</c>): a cookie alone is what a cross-site form would send.
    /// </summary>
    public static async Task SessionAntiforgery(HttpContext http, Func<Task> next)
    {
        if (http.Features.Get<Credential>() is { Kind: CredentialKinds.Session }
            && http.Request.Path.StartsWithSegments("/api")
            && !(HttpMethods.IsGet(http.Request.Method) || HttpMethods.IsHead(http.Request.Method) || HttpMethods.IsOptions(http.Request.Method))
            && !await IsValidAsync(http.RequestServices.GetRequiredService<IAntiforgery>(), http))
        {
            await ProblemResponses.WriteAsync(http, StatusCodes.Status400BadRequest, "Bad request",
                "A request made with the web session needs the antiforgery token in the X-CSRF-Token header.");
            return;
        }
        await next();
    }

    /// <summary>A malformed form (no boundary, a key too long, NUL characters) is an invalid request, not a server error.</summary>
    internal static async Task<bool> IsValidAsync(IAntiforgery antiforgery, HttpContext http)
    {
        try
        {
            return await antiforgery.IsRequestValidAsync(http);
        }
        catch (Exception e) when (e is AntiforgeryValidationException or InvalidDataException or BadHttpRequestException or IOException)
        {
            return false;
        }
    }

    /// <summary>
    /// A page asked for with <c>Authorization</c>: a program, never redirected to the login page. Daeploy's CLI lists the
    /// services at <c>/services/</c>; any other page says where the API is (401 without a valid credential).
    /// </summary>
    internal static IResult ForProgram(HttpContext http)
    {
        if (http.Request.Path.StartsWithSegments("/services", out var rest) && rest.Value is "" or "/")
            return Compat.DaeployApi.ListServices(http);
        if (http.Features.Get<Credential>() is null)
            return Results.Problem(statusCode: StatusCodes.Status401Unauthorized, title: "Unauthorized",
                detail: "The credential is invalid. This path is a page of the web UI; programs use the API under /api/v1, described at /openapi/v1.json.");
        return Results.Problem(statusCode: StatusCodes.Status404NotFound, title: "Not found",
            detail: "This path is a page of the web UI, which needs the web session; programs use the API under /api/v1, described at /openapi/v1.json.");
    }

    private static IResult Home(HttpContext http, ServiceRegistry registry, ServiceHosts hosts)
    {
        if (http.Request.Headers.Authorization.Count > 0)
            return ForProgram(http);
        if (http.Features.Get<Credential>() is not { Kind: CredentialKinds.Session } credential)
            return Results.Redirect("/login");
        return PageResults.Render<HomePage>(http, new { credential.Owner.Name, credential.Owner.IsAdmin, Services = ServiceLink.For(registry.ReachableBy(credential), hosts) });
    }

    /// <param name="sso">Why a login through a provider was refused (docs/single-sign-on.md).</param>
    /// <param name="signedOut">The provider a person who just logged out had logged in through: the page offers its logout.</param>
    private static async Task<IResult> LoginForm(HttpContext http, PublicUrl publicUrl, LoginMethods methods, string? returnUrl = null, string? sso = null,
        string? provider = null, [FromQuery(Name = "signed_out")] string? signedOut = null)
    {
        if (http.Features.Get<Credential>() is { Kind: CredentialKinds.Session })
            return Results.Redirect(SafeReturnUrl(returnUrl) ?? "/");
        var providerLogout = methods.Providers.FirstOrDefault(p => p.Name == signedOut) is { } from
            ? (from.DisplayName, await OidcLogin.EndSessionUrlAsync(http, from, publicUrl.Value))
            : default;
        var error = OidcLogin.Explain(sso, methods.Providers.FirstOrDefault(p => p.Name == provider));
        return LoginPage(http, methods, returnUrl, error, StatusCodes.Status200OK, providerLogout.Item2 is { } url ? (providerLogout.DisplayName, url) : null);
    }

    private static IResult LoginPage(HttpContext http, LoginMethods methods, string? returnUrl, string? error, int status, (string Name, string Url)? providerLogout = null)
    {
        var safeReturnUrl = SafeReturnUrl(returnUrl) ?? "";
        return PageResults.Render<LoginPage>(http, new
        {
            Error = error,
            ReturnUrl = safeReturnUrl,
            methods.LocalLogin,
            Providers = methods.Providers.Select(p => new LoginProviderLink(p.DisplayName,
                safeReturnUrl.Length > 0 ? $"{p.LoginPath}?returnUrl={Uri.EscapeDataString(safeReturnUrl)}" : p.LoginPath)).ToList(),
            ProviderLogout = providerLogout is { } logout ? new LoginProviderLink(logout.Name, logout.Url) : null,
        }, status);
    }

    /// <summary>
    /// Starts the web session of a person who has just proved who they are (by password, or through an OpenID Provider):
    /// the session row, <c>login.succeeded</c> with <paramref name="path"/>, and the session cookie.
    /// </summary>
    internal static async Task StartSessionAsync(HttpContext http, User user, string path)
    {
        var (db, sessions, audit) = (http.RequestServices.GetRequiredService<PortcullisDb>(), http.RequestServices.GetRequiredService<SessionStore>(),
            http.RequestServices.GetRequiredService<AuditLog>());
        var (id, expires) = await sessions.CreateAsync(user, http, http.RequestAborted);
        db.AuditEvents.Add(audit.Create(http, AuditEvents.LoginSucceeded, user.Username, user.Id, details: new { path, session_expires_at = expires }));
        await db.SaveChangesAsync(http.RequestAborted);
        http.Response.Cookies.Append(PortcullisCookies.Session(SessionStore.IsSecure(http)), id, new CookieOptions
        {
            HttpOnly = true,
            SameSite = SameSiteMode.Lax,
            Secure = SessionStore.IsSecure(http),
            Path = "/",
            Expires = expires,
            IsEssential = true,
        });
    }

    private static async Task<IResult> LoginAsync(HttpContext http, IAntiforgery antiforgery, PortcullisDb db, PasswordHasher hasher, LoginThrottle throttle,
        AuditLog audit, LoginMethods methods)
    {
        if (!methods.LocalLogin)
            return LoginPage(http, methods, null, "Logging in with a password is switched off here: log in with your identity provider.", StatusCodes.Status403Forbidden);
        if (!http.Request.HasFormContentType)
            return Results.Problem(statusCode: 400, title: "Bad request", detail: "Send the login form.");
        if (!await IsValidAsync(antiforgery, http))
            return Results.Problem(statusCode: 400, title: "Bad request", detail: "The form has expired or did not come from this site. Reload the login page and try again.");
        var form = await http.Request.ReadFormAsync(http.RequestAborted);
        var username = form["username"].ToString().Trim();
        var password = form["password"].ToString();
        var returnUrl = form["returnUrl"].ToString();
        if (username.Length == 0 || password.Length == 0)
            return LoginPage(http, methods, returnUrl, "Enter your username and password.", StatusCodes.Status400BadRequest);

        // The same limits as the API's password grant (docs/decisions.md), checked before the user is looked up.
        await using var attempt = await throttle.CheckAsync(LoginKind.Password, username, http, http.RequestAborted);
        if (attempt.IsThrottled)
            return LoginPage(http, methods, returnUrl, attempt.RefuseWith429(http.Response), StatusCodes.Status429TooManyRequests);

        var user = await PasswordLogin.CheckAsync(http, db, hasher, audit, attempt, username, password, "web");
        if (user is null)
            return LoginPage(http, methods, returnUrl, "The username or password is wrong, or the account is disabled.", StatusCodes.Status400BadRequest);

        await StartSessionAsync(http, user, "web");
        // 303: the browser follows with a GET, and a reload does not post the password again.
        http.Response.Headers.Location = SafeReturnUrl(returnUrl) ?? "/";
        return Results.StatusCode(StatusCodes.Status303SeeOther);
    }

    /// <summary>GET never changes state: it shows a button that posts the logout.</summary>
    private static IResult LogoutForm(HttpContext http) =>
        http.Features.Get<Credential>() is { Kind: CredentialKinds.Session } ? PageResults.Render<LogoutPage>(http) : Results.Redirect("/login");

    private static async Task<IResult> LogoutAsync(HttpContext http, IAntiforgery antiforgery, SessionStore sessions, InvalidationBus bus, AuditLog audit, PortcullisDb db)
    {
        if (!await IsValidAsync(antiforgery, http))
            return Results.Problem(statusCode: 400, title: "Bad request", detail: "The form has expired or did not come from this site. Reload the page and try again.");
        var name = PortcullisCookies.Session(SessionStore.IsSecure(http));
        if (http.Request.Cookies[name] is { Length: > 0 } id)
        {
            await sessions.RevokeAsync(id, bus, http.RequestAborted);
            if (http.Features.Get<Credential>() is { } credential)
            {
                db.AuditEvents.Add(audit.Create(http, AuditEvents.Logout, credential.Owner.Name, credential.Owner.Id));
                await db.SaveChangesAsync(http.RequestAborted);
            }
        }
        http.Response.Cookies.Delete(name, new CookieOptions { Path = "/", Secure = SessionStore.IsSecure(http), SameSite = SameSiteMode.Lax, HttpOnly = true });
        http.Response.Headers.Location = "/login";
        // Logged in through a provider: the login page offers the provider's own logout too.
        if (http.Request.Cookies[OidcLogin.ProviderCookie] is { Length: > 0 } provider)
        {
            http.Response.Cookies.Delete(OidcLogin.ProviderCookie, new CookieOptions { Path = "/", Secure = http.Request.IsHttps, SameSite = SameSiteMode.Lax, HttpOnly = true });
            http.Response.Headers.Location = "/login?signed_out=" + Uri.EscapeDataString(provider);
        }
        return Results.StatusCode(StatusCodes.Status303SeeOther);
    }

    /// <summary>
    /// A return URL is followed only when it is a path on this site: it starts with one '/', and neither it
    /// nor its decoded form holds a backslash or a control character (browsers drop tabs and newlines, so
    /// <c>/%09/evil</c> would become <c>//evil</c>, another host).
    /// </summary>
    internal static string? SafeReturnUrl(string? url)
    {
        if (string.IsNullOrEmpty(url) || url.Length > 2048)
            return null;
        string decoded;
        try
        {
            decoded = Uri.UnescapeDataString(url);
        }
        catch (UriFormatException)
        {
            return null;
        }
        foreach (var candidate in (ReadOnlySpan<string>)[url, decoded])
        {
            if (candidate.Length == 0 || candidate[0] != '/' || (candidate.Length > 1 && candidate[1] is '/' or '\\')
                || candidate.Contains('\\') || candidate.Any(c => char.IsControl(c) || c == '\u2028' || c == '\u2029'))
                return null;
        }
        // A Location header is ASCII: anything else is sent percent-encoded (UTF-8), still a path on this site.
        return url.All(char.IsAscii) ? url : EncodeNonAscii(url);
    }

    private static string EncodeNonAscii(string url)
    {
        var builder = new StringBuilder(url.Length * 2);
        Span<byte> bytes = stackalloc byte[4];
        foreach (var rune in url.EnumerateRunes())
        {
            if (rune.IsAscii)
            {
                builder.Append((char)rune.Value);
                continue;
            }
            var length = rune.EncodeToUtf8(bytes);
            foreach (var b in bytes[..length])
                builder.Append('%').Append(b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
        }
        return builder.ToString();
    }

}
