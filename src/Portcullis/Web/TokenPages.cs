using System.Globalization;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Gateway;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Tokens;
using Portcullis.Web.Pages;

namespace Portcullis.Web;

/// <summary>What the generate form holds, kept as typed when a rule sends it back.</summary>
public sealed record TokenForm(string Name, string Description, string Expiration, string CustomDate, bool Api, bool Services, string ServiceChoice,
    IReadOnlyList<string> ChosenServices, bool Admin, string MaxUses, string AllowedFrom, string PerSecond, string PerMinute, bool Link, string LinkMinutes)
{
    public static readonly TokenForm Default = new("", "", "30", "", true, true, "all", [], false, "", "", "", "", false, "60");

    public static TokenForm Read(IFormCollection form) => new(form["name"].ToString(), form["description"].ToString(), form["expiration"].ToString(),
        form["custom_date"].ToString(), form["api"] == "on", form["services"] == "on", form["service_choice"].ToString(),
        form["service"].Select(s => s ?? "").ToList(), form["admin"] == "on", form["max_uses"].ToString().Trim(),
        form["allowed_cidrs"].ToString().Trim(), form["rate_per_second"].ToString().Trim(), form["rate_per_minute"].ToString().Trim(),
        form["deliver_link"] == "on", form["link_minutes"].ToString().Trim());

    /// <summary>The API's request for this form, or the rule the form broke (with the form's own field names).</summary>
    public Checked<CreateTokenRequest> ToRequest()
    {
        var scopes = new List<string>();
        if (Api)
            scopes.Add(Scopes.Api);
        if (Services && ServiceChoice == "chosen")
        {
            if (ChosenServices.Count == 0)
                return new RuleError("scopes", "Choose at least one service, or All services.");
            scopes.AddRange(ChosenServices.Select(s => Scopes.ServicePrefix + s));
        }
        else if (Services)
            scopes.Add(Scopes.Services);
        if (Admin)
            scopes.Add(Scopes.Admin);
        if (scopes.Count == 0)
            return new RuleError("scopes", "Choose at least one kind of access.");

        long? days = null;
        string? at = null;
        switch (Expiration)
        {
            case "7" or "30" or "60" or "90":
                days = long.Parse(Expiration, CultureInfo.InvariantCulture);
                break;
            case "custom" when CustomDate.Length > 0:
                at = CustomDate;
                break;
            case "custom":
                return new RuleError("expiration", "Pick the custom expiration date.");
            case "never":
                break;
            default:
                return new RuleError("expiration", "Choose an expiration.");
        }
        if (!TryNumber(MaxUses, out var maxUses))
            return new RuleError("max_uses", "Give the use limit as a whole number, or leave it empty for no limit.");
        if (!TryNumber(PerSecond, out var perSecond) || !TryNumber(PerMinute, out var perMinute))
            return new RuleError("rate_limit", "Give each rate as a whole number of requests, or leave it empty for no limit.");
        if (!TryNumber(LinkMinutes, out var linkMinutes))
            return new RuleError("link", "Choose how long the link works.");
        // Ranges one per line, or separated by spaces or commas; none: anywhere.
        var allowedFrom = AllowedFrom.Split([' ', ',', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries);
        return new CreateTokenRequest(Name, Description.Length == 0 ? null : Description, days, at, [.. scopes], null, maxUses,
            allowedFrom.Length == 0 ? null : allowedFrom, perSecond is null && perMinute is null ? null : new TokenRateLimit(perSecond, perMinute),
            Link ? TokenLinks.Link : null, Link ? linkMinutes : null);
    }

    /// <summary>An optional whole number: empty is null; anything else must be digits.</summary>
    private static bool TryNumber(string text, out long? value)
    {
        value = null;
        if (text.Length == 0)
            return true;
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n))
            return false;
        value = n;
        return true;
    }

    /// <summary>The form's field for a field of the API's request.</summary>
    public static RuleError OnForm(RuleError error) => error with
    {
        Field = error.Field switch
        {
            "name" or "description" or "max_uses" or "allowed_cidrs" or "rate_limit" => error.Field,
            "deliver" or "link_expires_in_minutes" => "link",
            "expires_in_days" or "expires_at" => "expiration",
            _ => "scopes",
        },
    };
}

/// <summary>
/// <c>/tokens</c>, <c>/tokens/new</c>, <c>/tokens/{id}</c> and deleting a token (docs/web-ui.md). Every change goes
/// through the same rules as the REST API (<see cref="TokensApi"/>).
/// </summary>
internal static class TokenPages
{
    public static IEndpointRouteBuilder MapTokenPages(this IEndpointRouteBuilder app)
    {
        var pages = app.MapGroup("").AsWebPages().AddEndpointFilter(RequireSession);
        pages.MapGet("/tokens", ListAsync);
        pages.MapGet("/tokens/new", NewForm);
        pages.MapPost("/tokens/new", CreateAsync).DisableAntiforgery();
        pages.MapGet("/tokens/{id:long}", DetailAsync);
        pages.MapPost("/tokens/{id:long}/narrow", NarrowAsync).DisableAntiforgery();
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
        if (HttpMethods.IsPost(http.Request.Method) && !http.Request.HasFormContentType)
            return Results.Problem(statusCode: 400, title: "Bad request", detail: "Send the page's form (application/x-www-form-urlencoded).");
        if (HttpMethods.IsPost(http.Request.Method) && !await WebPages.IsValidAsync(http.RequestServices.GetRequiredService<IAntiforgery>(), http))
            return Results.Problem(statusCode: 400, title: "Bad request", detail: "The form has expired or did not come from this site. Reload the page and try again.");
        return await next(context);
    }

    private static async Task<IResult> ListAsync(HttpContext http, PortcullisDb db, TimeProvider time, string? deleted, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcDateTime;
        var tokens = await TokensApi.ListOwnedByAsync(db, now, http.Credential().Owner.Id, cancellationToken);
        return PageResults.Render<TokensPage>(http, new { Tokens = tokens, Now = now, Deleted = deleted });
    }

    private static IResult NewForm(HttpContext http, ServiceRegistry registry) => Form(http, registry, TokenForm.Default, null);

    private static IResult Form(HttpContext http, ServiceRegistry registry, TokenForm form, RuleError? error) =>
        PageResults.Render<NewTokenPage>(http, new
        {
            Form = form,
            Error = error,
            Services = registry.All.Where(s => s.Protected).Select(s => s.Name).Distinct().ToList(),
            IsAdmin = http.Credential().Owner.IsAdmin,
        }, error?.Status ?? StatusCodes.Status200OK);

    private static async Task<IResult> CreateAsync(HttpContext http, ServiceRegistry registry, PortcullisDb db, TokenFormat format,
        AuditLog audit, InvalidationBus invalidation, IOptions<TokenOptions> options, TimeProvider time, CancellationToken cancellationToken)
    {
        var form = TokenForm.Read(await http.Request.ReadFormAsync(cancellationToken));
        var (request, invalid) = form.ToRequest();
        if (invalid is not null)
            return Form(http, registry, form, invalid);
        var (created, error) = await TokensApi.IssueAsync(request!, http, db, format, audit, invalidation, options.Value, time, cancellationToken);
        if (error is not null)
            return Form(http, registry, form, TokenForm.OnForm(error));
        return PageResults.Render<TokenCreatedPage>(http, new { Token = created });
    }

    private static async Task<IResult> DetailAsync(long id, HttpContext http, PortcullisDb db, TimeProvider time, CancellationToken cancellationToken) =>
        await RenderDetailAsync(id, http, db, time, done: http.Request.Query.ContainsKey("narrowed") ? "The token was narrowed to what it used." : null, error: null, cancellationToken);

    private static async Task<IResult> RenderDetailAsync(long id, HttpContext http, PortcullisDb db, TimeProvider time, string? done, RuleError? error,
        CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcDateTime;
        if (await TokensApi.FindVisibleAsync(id, http, db, cancellationToken) is not { } found)
            return NotFound(http, id);
        var usage = await TokensApi.CountUsageAsync(id, db, DateOnly.FromDateTime(now), 30, cancellationToken);
        var suggestion = await ScopeNarrowing.SuggestAsync(found.Token, db, time, cancellationToken);
        var idText = id.ToString(CultureInfo.InvariantCulture);
        var events = await db.AuditEvents.AsNoTracking().Where(e => e.TokenId == idText).OrderByDescending(e => e.Id).Take(50).ToListAsync(cancellationToken);
        var described = events.Select(AuditEventResponse.From).ToList();
        return PageResults.Render<TokenDetailPage>(http, new
        {
            Token = await TokensApi.DescribeAsync(found.Token, found.Owner, db, now, cancellationToken), Usage = usage, Suggestion = suggestion, Events = described, Now = now,
            Done = done, Error = error?.Message,
        }, error?.Status ?? StatusCodes.Status200OK);
    }

    /// <summary>The token page's "Narrow" button: to the scopes the page showed, which the rules check again.</summary>
    private static async Task<IResult> NarrowAsync(long id, HttpContext http, PortcullisDb db, AuditLog audit, InvalidationBus invalidation, TimeProvider time,
        CancellationToken cancellationToken)
    {
        var shown = (await http.Request.ReadFormAsync(cancellationToken))["scope"].Select(s => s ?? "").ToArray();
        var (_, error) = await ScopeNarrowing.NarrowAsync(id, shown, http, db, audit, invalidation, time, cancellationToken);
        return error is null ? Results.Redirect($"/tokens/{id}?narrowed=1")
            : error.Status == StatusCodes.Status404NotFound ? NotFound(http, id)
            : await RenderDetailAsync(id, http, db, time, done: null, error, cancellationToken);
    }

    private static async Task<IResult> ConfirmDeleteAsync(long id, string? back, HttpContext http, PortcullisDb db, TimeProvider time, CancellationToken cancellationToken) =>
        await TokensApi.FindAsync(id, http, db, time.GetUtcNow().UtcDateTime, cancellationToken) is { } token
            ? PageResults.Render<DeleteTokenPage>(http, new { Token = token, Back = BackTo(back) })
            : NotFound(http, id);

    private static async Task<IResult> DeleteAsync(long id, string? back, HttpContext http, PortcullisDb db, AuditLog audit, InvalidationBus bus, TimeProvider time,
        CancellationToken cancellationToken) =>
        await TokensApi.RevokeVisibleAsync(id, http, db, audit, bus, time, cancellationToken) is { } revoked
            ? Results.Redirect($"{BackTo(back)}?deleted={Uri.EscapeDataString(revoked.Name)}")
            : NotFound(http, id);

    private static string BackTo(string? back) => back == "admin" ? "/admin/tokens" : "/tokens";

    private static IResult NotFound(HttpContext http, long id) => PageResults.NotFound(http, $"There is no token {id} that you can see.");

    private static IResult Services(HttpContext http, ServiceRegistry registry, ServiceHosts hosts) =>
        PageResults.Render<ServicesPage>(http, new { Services = ServiceLink.For(registry.ReachableBy(http.Credential()), hosts) });
}
