using System.Text;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.EntityFrameworkCore;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Gateway;
using Portcullis.Security;
using Portcullis.Users;

namespace Portcullis.Web;

/// <summary>
/// The web UI's entry: <c>/login</c>, <c>/logout</c> and the home page (docs/web-ui.md), server-rendered, usable
/// without JavaScript. A login makes a server-side session (<see cref="SessionStore"/>) whose cookie
/// the API and the gateway accept too.
/// </summary>
internal static class WebPages
{
    public static IEndpointRouteBuilder MapWebPages(this IEndpointRouteBuilder app)
    {
        app.MapGet("/", Home).ExcludeFromDescription();
        app.MapGet("/login", LoginForm).ExcludeFromDescription();
        app.MapPost("/login", LoginAsync).ExcludeFromDescription().DisableAntiforgery();
        app.MapGet("/logout", LogoutForm).ExcludeFromDescription();
        app.MapPost("/logout", LogoutAsync).ExcludeFromDescription().DisableAntiforgery();
        app.MapGet("/static/portcullis.css", () => Results.Text(Html.Stylesheet, "text/css; charset=utf-8")).ExcludeFromDescription();
        app.MapGet("/static/portcullis.js", () => Results.Text(Html.Script, "text/javascript; charset=utf-8")).ExcludeFromDescription();
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
        if (!http.Request.IsHttps && IsPage(http.Request.Path))
        {
            var publicUrl = http.RequestServices.GetRequiredService<PublicUrl>().Value;
            http.Response.StatusCode = StatusCodes.Status308PermanentRedirect;
            http.Response.Headers.Location = publicUrl + http.Request.Path + http.Request.QueryString;
            return Task.CompletedTask;
        }
        return next();
    }

    private static bool IsPage(PathString path) =>
        path == "/" || path.StartsWithSegments("/login") || path.StartsWithSegments("/logout") || path.StartsWithSegments("/tokens")
        || path == "/services" || path.StartsWithSegments("/admin");

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

    private static IResult Home(HttpContext http, IAntiforgery antiforgery, ServiceRegistry registry, ServiceHosts hosts)
    {
        if (http.Request.Headers.Authorization.Count > 0)
            return ForProgram(http);
        if (http.Features.Get<Credential>() is not { Kind: CredentialKinds.Session } credential)
            return Results.Redirect("/login");
        var tokens = antiforgery.GetAndStoreTokens(http);
        var services = registry.ReachableBy(credential).ToList();
        var body = new StringBuilder();
        body.Append($"<h1>Portcullis</h1><p>Logged in as <strong>{Html.H(credential.Owner.Name)}</strong>{(credential.Owner.IsAdmin ? " (admin)" : "")}.</p>");
        body.Append("<h2>Services</h2>");
        if (services.Count == 0)
            body.Append("<p>No services you may open.</p>");
        else
        {
            body.Append("<ul>");
            foreach (var s in services)
                body.Append($"<li><a href=\"{Html.H(hosts.Origin(s.Label))}/\">{Html.H(s.Name)} {Html.H(s.Version)}</a>{(s.Description is null ? "" : " — " + Html.H(s.Description))}</li>");
            body.Append("</ul>");
        }
        body.Append($"<meta name=\"csrf-token\" content=\"{Html.H(tokens.RequestToken!)}\">");
        body.Append(LogoutButton(tokens));
        return Html.Page(http, "Portcullis", body.ToString());
    }

    private static IResult LoginForm(HttpContext http, IAntiforgery antiforgery, string? returnUrl = null)
    {
        if (http.Features.Get<Credential>() is { Kind: CredentialKinds.Session })
            return Results.Redirect(SafeReturnUrl(returnUrl) ?? "/");
        return LoginPage(http, antiforgery, returnUrl, null, StatusCodes.Status200OK);
    }

    private static IResult LoginPage(HttpContext http, IAntiforgery antiforgery, string? returnUrl, string? error, int status)
    {
        var tokens = antiforgery.GetAndStoreTokens(http);
        var body = $"""
            <h1>Log in to Portcullis</h1>
            {(error is null ? "" : $"<p class=\"error\" role=\"alert\" id=\"login-error\">{Html.H(error)}</p>")}
            <form method="post" action="/login">
              <input type="hidden" name="{Html.H(tokens.FormFieldName)}" value="{Html.H(tokens.RequestToken!)}">
              <input type="hidden" name="returnUrl" value="{Html.H(SafeReturnUrl(returnUrl) ?? "")}">
              <label for="username">Username</label>
              <input id="username" name="username" autocomplete="username" required maxlength="64" autofocus>
              <label for="password">Password</label>
              <input id="password" name="password" type="password" autocomplete="current-password" required maxlength="1024">
              <button type="submit">Log in</button>
            </form>
            """;
        return Html.Page(http, "Log in — Portcullis", body, status);
    }

    private static async Task<IResult> LoginAsync(HttpContext http, IAntiforgery antiforgery, PortcullisDb db, PasswordHasher hasher, LoginThrottle throttle,
        SessionStore sessions, AuditLog audit)
    {
        if (!http.Request.HasFormContentType)
            return Results.Problem(statusCode: 400, title: "Bad request", detail: "Send the login form.");
        if (!await IsValidAsync(antiforgery, http))
            return Results.Problem(statusCode: 400, title: "Bad request", detail: "The form has expired or did not come from this site. Reload the login page and try again.");
        var form = await http.Request.ReadFormAsync(http.RequestAborted);
        var username = form["username"].ToString().Trim();
        var password = form["password"].ToString();
        var returnUrl = form["returnUrl"].ToString();
        if (username.Length == 0 || password.Length == 0)
            return LoginPage(http, antiforgery, returnUrl, "Enter your username and password.", StatusCodes.Status400BadRequest);

        // The same limits as the API's password grant (docs/decisions.md), checked before the user is looked up.
        await using var attempt = await throttle.CheckAsync(LoginKind.Password, username, http, http.RequestAborted);
        if (attempt.IsThrottled)
            return LoginPage(http, antiforgery, returnUrl, attempt.RefuseWith429(http.Response), StatusCodes.Status429TooManyRequests);

        var user = await TokenEndpoint.CheckPasswordAsync(http, db, hasher, audit, attempt, username, password, "web");
        if (user is null)
            return LoginPage(http, antiforgery, returnUrl, "The username or password is wrong, or the account is disabled.", StatusCodes.Status400BadRequest);

        var (id, expires) = await sessions.CreateAsync(user, http, http.RequestAborted);
        db.AuditEvents.Add(audit.Create(http, AuditEvents.LoginSucceeded, user.Username, user.Id, details: new { path = "web", session_expires_at = expires }));
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
        // 303: the browser follows with a GET, and a reload does not post the password again.
        http.Response.Headers.Location = SafeReturnUrl(returnUrl) ?? "/";
        return Results.StatusCode(StatusCodes.Status303SeeOther);
    }

    /// <summary>GET never changes state: it shows a button that posts the logout.</summary>
    private static IResult LogoutForm(HttpContext http, IAntiforgery antiforgery)
    {
        if (http.Features.Get<Credential>() is not { Kind: CredentialKinds.Session })
            return Results.Redirect("/login");
        return Html.Page(http, "Log out — Portcullis", "<h1>Log out</h1>" + LogoutButton(antiforgery.GetAndStoreTokens(http)));
    }

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
        return Results.StatusCode(StatusCodes.Status303SeeOther);
    }

    internal static string LogoutButton(AntiforgeryTokenSet tokens) =>
        $"<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"{Html.H(tokens.FormFieldName)}\" value=\"{Html.H(tokens.RequestToken!)}\"><button type=\"submit\">Log out</button></form>";

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
