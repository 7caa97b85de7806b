using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Gateway;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Tokens;
using static Portcullis.Web.Html;

namespace Portcullis.Web;

/// <summary>
/// <c>/tokens</c>, <c>/tokens/new</c>, <c>/tokens/{id}</c> and deleting a token (docs/web-ui.md). Every change goes
/// through the same handlers as the REST API (<see cref="TokensApi"/>), so the rules are the same.
/// </summary>
internal static class TokenPages
{
    public static IEndpointRouteBuilder MapTokenPages(this IEndpointRouteBuilder app)
    {
        var pages = app.MapGroup("").ExcludeFromDescription().AddEndpointFilter(RequireSession);
        pages.MapGet("/tokens", ListAsync);
        pages.MapGet("/tokens/new", NewForm);
        pages.MapPost("/tokens/new", CreateAsync).DisableAntiforgery();
        pages.MapGet("/tokens/{id:long}", DetailAsync);
        pages.MapGet("/tokens/{id:long}/delete", ConfirmDeleteAsync);
        pages.MapPost("/tokens/{id:long}/delete", DeleteAsync).DisableAntiforgery();
        pages.MapGet("/services", Services);
        return app;
    }

    /// <summary>
    /// Pages need a web session; a browser without one goes to the login page and comes back. A program (it sent
    /// <c>Authorization</c>) is never sent to a page: it gets an answer it can read (<see cref="WebPages.ForProgram"/>).
    /// </summary>
    internal static async ValueTask<object?> RequireSession(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        if (http.Request.Headers.Authorization.Count > 0)
            return WebPages.ForProgram(http);
        if (http.Features.Get<Credential>() is not { Kind: CredentialKinds.Session })
            return Results.Redirect("/login?returnUrl=" + Uri.EscapeDataString(http.Request.Path + http.Request.QueryString));
        if (HttpMethods.IsPost(http.Request.Method) && !await WebPages.IsValidAsync(http.RequestServices.GetRequiredService<IAntiforgery>(), http))
            return Results.Problem(statusCode: 400, title: "Bad request", detail: "The form has expired or did not come from this site. Reload the page and try again.");
        return await next(context);
    }

    private static async Task<IResult> ListAsync(HttpContext http, PortcullisDb db, TimeProvider time, IAntiforgery antiforgery, CancellationToken cancellationToken)
    {
        var result = await TokensApi.ListAsync(http, db, time, null, null, cancellationToken);
        if (result.Result is not Ok<TokenResponse[]> { Value: { } tokens })
            return result.Result;
        var now = time.GetUtcNow().UtcDateTime;
        var body = new StringBuilder("<h1>Your tokens</h1>");
        if (http.Request.Query["deleted"] is { Count: 1 } deleted)
            body.Append($"<p role=\"status\">The token <strong>{H(deleted.ToString())}</strong> was deleted. It no longer works.</p>");
        body.Append("<p><a href=\"/tokens/new\">Generate new token</a></p>");
        body.Append(TokenTable(tokens, now, showOwner: false, antiforgery.GetAndStoreTokens(http)));
        return Page(http, "Tokens — Portcullis", body.ToString());
    }

    /// <summary>The table of docs/web-ui.md: a row a token, expiry highlighted within 7 days, and its Delete.</summary>
    internal static string TokenTable(IEnumerable<TokenResponse> tokens, DateTime now, bool showOwner, AntiforgeryTokenSet csrf)
    {
        var rows = new StringBuilder();
        foreach (var t in tokens)
        {
            var expires = t.ExpiresAt is not { } e ? "never"
                : t.Status == TokenStatus.Expired ? $"<span class=\"expired\">expired {Date(e)}</span>"
                : e - now <= TimeSpan.FromDays(7) ? $"<span class=\"soon\">{Date(e)} (soon)</span>" : Date(e);
            var status = t.Status == TokenStatus.Active ? "" : $" <span class=\"{t.Status}\">({t.Status})</span>";
            rows.Append("<tr>")
                .Append($"<td><a href=\"/tokens/{t.Id}\">{H(t.Name)}</a>{status}</td>")
                .Append(showOwner ? $"<td>{H(t.Owner)}</td>" : "")
                .Append($"<td>{H(t.Description ?? "")}</td><td><code>{H(t.TokenHint)}</code></td><td>{H(string.Join(' ', t.Scopes))}</td>")
                .Append($"<td>{Date(t.CreatedAt)}</td><td>{expires}</td><td>{(t.LastUsedAt is { } used ? Date(used) : "never")}</td>")
                .Append(t.Status == TokenStatus.Active ? $"<td><a href=\"/tokens/{t.Id}/delete\" aria-label=\"Delete {H(t.Name)}\">Delete</a></td>" : "<td></td>")
                .Append("</tr>");
        }
        if (rows.Length == 0)
            return "<p>No tokens yet.</p>";
        return $"<div class=\"table\"><table><thead><tr><th>Name</th>{(showOwner ? "<th>Owner</th>" : "")}<th>Description</th><th>Token</th><th>Scopes</th>" +
            $"<th>Created</th><th>Expires</th><th>Last used</th><th><span class=\"visually-hidden\">Actions</span></th></tr></thead><tbody>{rows}</tbody></table></div>";
    }

    private static IResult NewForm(HttpContext http, IAntiforgery antiforgery, ServiceRegistry registry) =>
        Form(http, antiforgery, registry, new FormValues("", "", "30", "", true, true, "all", [], false), null, StatusCodes.Status200OK);

    private sealed record FormValues(string Name, string Description, string Expiration, string CustomDate, bool Api, bool Services, string ServiceChoice,
        IReadOnlyList<string> ChosenServices, bool Admin);

    private static IResult Form(HttpContext http, IAntiforgery antiforgery, ServiceRegistry registry, FormValues v, (string Field, string Message)? error, int status)
    {
        var credential = http.Features.Get<Credential>()!;
        var csrf = antiforgery.GetAndStoreTokens(http);
        string Error(string field) => error is { } e && e.Field == field ? $"<p class=\"field-error\" id=\"{field}-error\" role=\"alert\">{H(e.Message)}</p>" : "";
        string Described(string field) => error is { } e && e.Field == field ? $" aria-invalid=\"true\" aria-describedby=\"{field}-error\"" : "";
        string Selected(string value) => v.Expiration == value ? " selected" : "";
        var services = new StringBuilder();
        foreach (var s in registry.All.Where(s => s.Protected).Select(s => s.Name).Distinct())
        {
            var id = "svc-" + s;
            services.Append($"<br><input type=\"checkbox\" id=\"{id}\" name=\"service\" value=\"{H(s)}\"{(v.ChosenServices.Contains(s) ? " checked" : "")}> <label for=\"{id}\">{H(s)}</label>");
        }
        var body = $"""
            <h1>Generate new token</h1>
            <form method="post" action="/tokens/new">
              <input type="hidden" name="{H(csrf.FormFieldName)}" value="{H(csrf.RequestToken!)}">
              <label for="name">Name</label>
              <input id="name" name="name" required maxlength="100" value="{H(v.Name)}"{Described("name")}>
              {Error("name")}
              <label for="description">Description</label>
              <input id="description" name="description" maxlength="500" value="{H(v.Description)}"{Described("description")}>
              {Error("description")}
              <label for="expiration">Expiration</label>
              <select id="expiration" name="expiration"{Described("expiration")}>
                <option value="7"{Selected("7")}>7 days</option>
                <option value="30"{Selected("30")}>30 days</option>
                <option value="60"{Selected("60")}>60 days</option>
                <option value="90"{Selected("90")}>90 days</option>
                <option value="custom"{Selected("custom")}>Custom date</option>
                <option value="never"{Selected("never")}>No expiration</option>
              </select>
              <label for="custom_date">Custom expiration date</label>
              <input id="custom_date" name="custom_date" type="date" value="{H(v.CustomDate)}">
              <p class="warning">A token with no expiration works until someone deletes it. Prefer an expiry, and generate a new token when it ends.</p>
              {Error("expiration")}
              <fieldset{Described("scopes")}>
                <legend>Access</legend>
                <input type="checkbox" id="scope-api" name="api" value="on"{(v.Api ? " checked" : "")}> <label for="scope-api">Developer Operations Access</label>
                <p>Use the management API and the CLI as you.</p>
                <input type="checkbox" id="scope-services" name="services" value="on"{(v.Services ? " checked" : "")}> <label for="scope-services">Protected Endpoint Access</label>
                <p>
                  <input type="radio" id="services-all" name="service_choice" value="all"{(v.ServiceChoice != "chosen" ? " checked" : "")}> <label for="services-all">All services</label>
                  <input type="radio" id="services-chosen" name="service_choice" value="chosen"{(v.ServiceChoice == "chosen" ? " checked" : "")}> <label for="services-chosen">Only these services:</label>
                  {services}
                </p>
                {(credential.Owner.IsAdmin ? $"<input type=\"checkbox\" id=\"scope-admin\" name=\"admin\" value=\"on\"{(v.Admin ? " checked" : "")}> <label for=\"scope-admin\">Admin</label>" : "")}
              </fieldset>
              {Error("scopes")}
              <button type="submit">Generate token</button>
            </form>
            """;
        return Page(http, "Generate new token — Portcullis", body, status);
    }

    private static async Task<IResult> CreateAsync(HttpContext http, IAntiforgery antiforgery, ServiceRegistry registry, PortcullisDb db, TokenFormat format,
        AuditLog audit, InvalidationBus invalidation, IOptions<TokenOptions> options, TimeProvider time, CancellationToken cancellationToken)
    {
        var form = await http.Request.ReadFormAsync(cancellationToken);
        var v = new FormValues(form["name"].ToString(), form["description"].ToString(), form["expiration"].ToString(), form["custom_date"].ToString(),
            form["api"] == "on", form["services"] == "on", form["service_choice"].ToString(), form["service"].Select(s => s ?? "").ToList(), form["admin"] == "on");

        var scopes = new List<string>();
        if (v.Api)
            scopes.Add(Scopes.Api);
        if (v.Services)
        {
            if (v.ServiceChoice == "chosen")
            {
                if (v.ChosenServices.Count == 0)
                    return Form(http, antiforgery, registry, v, ("scopes", "Choose at least one service, or All services."), StatusCodes.Status400BadRequest);
                scopes.AddRange(v.ChosenServices.Select(s => Scopes.ServicePrefix + s));
            }
            else
                scopes.Add(Scopes.Services);
        }
        if (v.Admin)
            scopes.Add(Scopes.Admin);
        if (scopes.Count == 0)
            return Form(http, antiforgery, registry, v, ("scopes", "Choose at least one kind of access."), StatusCodes.Status400BadRequest);

        long? days = null;
        string? at = null;
        switch (v.Expiration)
        {
            case "7" or "30" or "60" or "90":
                days = long.Parse(v.Expiration, CultureInfo.InvariantCulture);
                break;
            case "custom" when v.CustomDate.Length > 0:
                at = v.CustomDate;
                break;
            case "custom":
                return Form(http, antiforgery, registry, v, ("expiration", "Pick the custom expiration date."), StatusCodes.Status400BadRequest);
            case "never":
                break;
            default:
                return Form(http, antiforgery, registry, v, ("expiration", "Choose an expiration."), StatusCodes.Status400BadRequest);
        }
        var request = new CreateTokenRequest(v.Name, v.Description.Length == 0 ? null : v.Description, days, at, [.. scopes], null);
        var result = await TokensApi.CreateAsync(request, http, db, format, audit, invalidation, options, time, cancellationToken);
        if (result.Result is ProblemHttpResult problem)
        {
            var detail = problem.ProblemDetails.Detail ?? "The token could not be created.";
            var field = detail.Contains("name", StringComparison.OrdinalIgnoreCase) && !detail.Contains("scope", StringComparison.OrdinalIgnoreCase) ? "name"
                : detail.Contains("description", StringComparison.OrdinalIgnoreCase) ? "description"
                : detail.Contains("expir", StringComparison.OrdinalIgnoreCase) || detail.Contains("lifetime", StringComparison.OrdinalIgnoreCase) || detail.Contains("days", StringComparison.OrdinalIgnoreCase) ? "expiration"
                : "scopes";
            return Form(http, antiforgery, registry, v, (field, detail), problem.StatusCode);
        }
        var created = ((Created<CreatedTokenResponse>)result.Result).Value!;
        // Shown this once; never put in a URL, never cached.
        http.Response.Headers.CacheControl = "no-store";
        var body = $"""
            <h1>Your new token</h1>
            <p class="warning" role="alert">Copy it now: it will not be shown again. Store it like a password.</p>
            <label for="new-token">Your new token</label>
            <input id="new-token" readonly value="{H(created.Token)}" autocomplete="off" spellcheck="false">
            <button type="button" data-copy="new-token">Copy</button>
            <p>Use it as the header <code>Authorization: Bearer &lt;token&gt;</code>.</p>
            <p><strong>{H(created.Name)}</strong> · {H(string.Join(' ', created.Scopes))} · expires {(created.ExpiresAt is { } e ? Date(e) : "never")}</p>
            <p><a href="/tokens">Back to your tokens</a></p>
            <script src="/static/portcullis.js"></script>
            """;
        return Page(http, "Your new token — Portcullis", body);
    }

    private static async Task<IResult> DetailAsync(long id, HttpContext http, PortcullisDb db, TimeProvider time, CancellationToken cancellationToken)
    {
        if ((await TokensApi.GetAsync(id, http, db, time, cancellationToken)).Result is not Ok<TokenResponse> { Value: { } t })
            return Page(http, "Not found — Portcullis", $"<h1>Not found</h1><p>There is no token {id} that you can see.</p>", StatusCodes.Status404NotFound);
        var usage = ((Ok<TokenUsageResponse>)(await TokensApi.UsageAsync(id, http, db, time, cancellationToken, 30)).Result).Value!;
        var idText = id.ToString(CultureInfo.InvariantCulture);
        var events = await db.AuditEvents.AsNoTracking().Where(e => e.TokenId == idText).OrderByDescending(e => e.Id).Take(50).ToListAsync(cancellationToken);
        var body = new StringBuilder($"<h1>Token {H(t.Name)}</h1>");
        body.Append("<dl>")
            .Append($"<dt>Owner</dt><dd>{H(t.Owner)}</dd><dt>Description</dt><dd>{H(t.Description ?? "—")}</dd>")
            .Append($"<dt>Token</dt><dd><code>{H(t.TokenHint)}</code></dd><dt>Scopes</dt><dd>{H(string.Join(' ', t.Scopes))}</dd>")
            .Append($"<dt>Status</dt><dd>{t.Status}</dd><dt>Created</dt><dd>{Date(t.CreatedAt)}</dd>")
            .Append($"<dt>Expires</dt><dd>{(t.ExpiresAt is { } ends ? Date(ends) : "never")}</dd>")
            .Append($"<dt>Last used</dt><dd>{(t.LastUsedAt is { } u ? $"{Date(u)} from {H(t.LastUsedIp ?? "?")}" : "never")}</dd></dl>");
        body.Append($"<h2>Requests per day</h2><p>{usage.Total} requests in the last 30 days.</p>").Append(Chart(usage.Usage));
        body.Append("<h2>Events</h2>");
        if (events.Count == 0)
            body.Append("<p>None.</p>");
        else
        {
            body.Append("<div class=\"table\"><table><thead><tr><th>When</th><th>Event</th><th>By</th><th>From</th></tr></thead><tbody>");
            foreach (var ev in events)
                body.Append($"<tr><td>{Date(ev.OccurredAt)}</td><td>{H(ev.Event)}</td><td>{H(ev.Actor ?? "")}</td><td>{H(ev.ClientIp ?? "")}</td></tr>");
            body.Append("</tbody></table></div>");
        }
        return Page(http, $"Token {t.Name} — Portcullis", body.ToString());
    }

    /// <summary>Requests per day as an SVG bar chart, drawn here: no script, no external library.</summary>
    internal static string Chart(IReadOnlyList<UsageDay> days)
    {
        const int width = 600, height = 160, bottom = 20;
        var max = Math.Max(1, days.Max(d => d.Count));
        var bar = (double)width / days.Count;
        var svg = new StringBuilder($"<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Requests per day, last {days.Count} days, at most {max} a day\">");
        for (var i = 0; i < days.Count; i++)
        {
            var h = (height - bottom) * days[i].Count / (double)max;
            svg.Append(CultureInfo.InvariantCulture,
                $"<rect x=\"{i * bar + 1:0.#}\" y=\"{height - bottom - h:0.#}\" width=\"{bar - 2:0.#}\" height=\"{h:0.#}\"><title>{days[i].Date}: {days[i].Count}</title></rect>");
        }
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"0\" y=\"{height - 4}\" font-size=\"12\" fill=\"currentColor\">{days[0].Date}</text>");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{width}\" y=\"{height - 4}\" font-size=\"12\" text-anchor=\"end\" fill=\"currentColor\">{days[^1].Date}</text></svg>");
        return svg.ToString();
    }

    private static async Task<IResult> ConfirmDeleteAsync(long id, HttpContext http, PortcullisDb db, TimeProvider time, IAntiforgery antiforgery, CancellationToken cancellationToken)
    {
        if ((await TokensApi.GetAsync(id, http, db, time, cancellationToken)).Result is not Ok<TokenResponse> { Value: { } t })
            return Page(http, "Not found — Portcullis", $"<h1>Not found</h1><p>There is no token {id} that you can see.</p>", StatusCodes.Status404NotFound);
        var csrf = antiforgery.GetAndStoreTokens(http);
        var body = $"""
            <h1>Delete token {H(t.Name)}?</h1>
            <p class="warning">Anything using <code>{H(t.TokenHint)}</code> stops working at once. This cannot be undone.</p>
            <form method="post" action="/tokens/{id}/delete">
              <input type="hidden" name="{H(csrf.FormFieldName)}" value="{H(csrf.RequestToken!)}">
              <button type="submit">Delete this token</button>
              <a href="/tokens">Cancel</a>
            </form>
            """;
        return Page(http, "Delete token — Portcullis", body);
    }

    private static async Task<IResult> DeleteAsync(long id, HttpContext http, PortcullisDb db, AuditLog audit, InvalidationBus bus, TimeProvider time, CancellationToken cancellationToken)
    {
        var found = (await TokensApi.GetAsync(id, http, db, time, cancellationToken)).Result as Ok<TokenResponse>;
        var result = await TokensApi.RevokeAsync(id, http, db, audit, bus, time, cancellationToken);
        if (result.Result is ProblemHttpResult || found?.Value is null)
            return Page(http, "Not found — Portcullis", $"<h1>Not found</h1><p>There is no token {id} that you can see.</p>", StatusCodes.Status404NotFound);
        var back = http.Request.Query["back"] == "admin" ? "/admin/tokens" : "/tokens";
        return Results.Redirect($"{back}?deleted={Uri.EscapeDataString(found.Value.Name)}");
    }

    private static IResult Services(HttpContext http, ServiceRegistry registry, ServiceHosts hosts)
    {
        var credential = http.Features.Get<Credential>()!;
        var mine = registry.ReachableBy(credential).ToList();
        var body = new StringBuilder("<h1>Services</h1>");
        if (mine.Count == 0)
            body.Append("<p>No services you may open.</p>");
        else
        {
            body.Append("<div class=\"table\"><table><thead><tr><th>Service</th><th>Version</th><th>Description</th></tr></thead><tbody>");
            foreach (var s in mine)
                body.Append($"<tr><td><a href=\"{H(hosts.Origin(s.Label))}/\">{H(s.Name)}</a></td><td>{H(s.Version)}</td><td>{H(s.Description ?? "")}</td></tr>");
            body.Append("</tbody></table></div>");
        }
        return Page(http, "Services — Portcullis", body.ToString());
    }

    internal static string Date(DateTime d) => d.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture) + " UTC";
}
