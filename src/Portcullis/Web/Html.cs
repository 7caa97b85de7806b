using System.Text;
using System.Text.Encodings.Web;
using Portcullis.Auth;

namespace Portcullis.Web;

/// <summary>The page frame every page shares: headers of docs/web-ui.md, the navigation, the stylesheet and the one script.</summary>
internal static class Html
{
    /// <summary>Every page: the stylesheet, and the headers of docs/web-ui.md (no inline script, no framing).</summary>
    public static IResult Page(HttpContext http, string title, string body, int status = StatusCodes.Status200OK)
    {
        var headers = http.Response.Headers;
        // A form may lead to a service origin: logging in on the way to a service ends there (Gateway/ServiceOrigins.cs).
        var services = http.RequestServices.GetRequiredService<Gateway.ServiceHosts>().AnyOrigin;
        headers.ContentSecurityPolicy = $"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self' {services}; frame-ancestors 'none'; base-uri 'none'";
        headers.XFrameOptions = "DENY";
        headers["Referrer-Policy"] = "no-referrer";
        headers.CacheControl = "no-store";
        var html = $"""
            <!doctype html>
            <html lang="en">
            <head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>{H(title)}</title><link rel="stylesheet" href="/static/portcullis.css"></head>
            <body>{Navigation(http)}<main>
            {body}
            </main></body>
            </html>
            """;
        return Results.Content(html, "text/html; charset=utf-8", Encoding.UTF8, status);
    }

    /// <summary>The links of a logged-in person; admins see the administration.</summary>
    private static string Navigation(HttpContext http)
    {
        if (http.Features.Get<Credential>() is not { Kind: CredentialKinds.Session } credential)
            return "";
        var links = new StringBuilder("<nav aria-label=\"Main\"><a href=\"/tokens\">Tokens</a><a href=\"/services\">Services</a>");
        if (credential.Owner.IsAdmin)
            links.Append("<a href=\"/admin/users\">Users</a><a href=\"/admin/services\">Manage services</a><a href=\"/admin/clients\">OAuth clients</a><a href=\"/admin/tokens\">All tokens</a><a href=\"/admin/audit\">Audit log</a>");
        links.Append($"<span class=\"who\">{H(credential.Owner.Name)}</span><a href=\"/logout\">Log out</a></nav>");
        return links.ToString();
    }

    public static string H(string s) => HtmlEncoder.Default.Encode(s);

    public const string Stylesheet = """
        :root { color-scheme: light dark; font-family: system-ui, sans-serif; line-height: 1.5; }
        body { margin: 0; }
        main { max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
        label { display: block; margin-top: 1rem; font-weight: 600; }
        input { width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }
        button { margin-top: 1rem; padding: .5rem 1.25rem; font-size: 1rem; cursor: pointer; }
        button:focus-visible, input:focus-visible, a:focus-visible { outline: 3px solid #3b82f6; outline-offset: 2px; }
        .error { color: #b91c1c; font-weight: 600; }
        .warning { border-left: 4px solid #d97706; padding: .5rem 1rem; background: color-mix(in srgb, #d97706 12%, transparent); }
        nav { display: flex; flex-wrap: wrap; gap: .25rem 1rem; padding: .75rem 1rem; border-bottom: 1px solid #8884; }
        nav .who { margin-left: auto; opacity: .8; }
        main.wide, main:has(table) { max-width: 72rem; }
        table { border-collapse: collapse; width: 100%; }
        th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid #8883; vertical-align: top; }
        .table { overflow-x: auto; }
        .soon { color: #b45309; font-weight: 600; }
        .expired, .revoked { color: #b91c1c; font-weight: 600; }
        code { font-family: ui-monospace, monospace; }
        fieldset { margin-top: 1rem; border: 1px solid #8886; }
        fieldset label, .inline { display: inline; font-weight: normal; }
        input[type=checkbox], input[type=radio] { width: auto; }
        .field-error { color: #b91c1c; margin: .25rem 0 0; }
        .chart { width: 100%; height: auto; max-width: 40rem; }
        .chart rect { fill: #3b82f6; }
        form.inline { display: inline; }
        .visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
        select { padding: .5rem; font-size: 1rem; }
        input.short { width: 12rem; }
        @media (max-width: 40rem) { nav .who { margin-left: 0; } th, td { padding: .3rem; } }
        """;

    /// <summary>The only script: the Copy button of the token reveal (no inline script, CSP 'self').</summary>
    public const string Script = """
        document.addEventListener("click", async (event) => {
          const button = event.target.closest("[data-copy]");
          if (!button) return;
          const field = document.getElementById(button.dataset.copy);
          try {
            await navigator.clipboard.writeText(field.value);
          } catch {
            field.select();
            document.execCommand("copy");
          }
          button.textContent = "Copied";
        });
        """;
}
