using Microsoft.Extensions.Options;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Notifications;
using Portcullis.Security;
using Portcullis.Web.Pages;

namespace Portcullis.Web;

/// <summary><c>/webhooks</c>: a person's webhooks and the deliveries (an admin sees every delivery); the same rules as <c>/api/v1/webhooks</c>.</summary>
internal static class WebhookPages
{
    public static IEndpointRouteBuilder MapWebhookPages(this IEndpointRouteBuilder app)
    {
        var pages = app.MapGroup("/webhooks").AsWebPages().AddEndpointFilter(TokenPages.RequireSession);
        pages.MapGet("", PageAsync);
        pages.MapPost("", CreateAsync).DisableAntiforgery();
        pages.MapPost("/{id:long}/delete", DeleteAsync).DisableAntiforgery();
        return app;
    }

    private static Task<IResult> PageAsync(HttpContext http, PortcullisDb db, CancellationToken cancellationToken) =>
        RenderAsync(http, db, cancellationToken, done: http.Request.Query["done"]);

    private static async Task<IResult> RenderAsync(HttpContext http, PortcullisDb db, CancellationToken cancellationToken, string? done = null,
        WebhookResponse? created = null, RuleError? createError = null, CreateWebhookRequest? submitted = null, string? error = null, int status = StatusCodes.Status200OK)
    {
        var person = http.Credential().Owner;
        return PageResults.Render<WebhooksPage>(http, new
        {
            Webhooks = await WebhooksApi.ListOwnAsync(db, person.Id, cancellationToken),
            Deliveries = await WebhooksApi.ListDeliveriesAsync(db, person.IsAdmin ? null : person.Id, 100, cancellationToken),
            Created = created,
            Done = done,
            Error = error,
            CreateError = createError,
            SubmittedUrl = submitted?.Url,
            SubmittedEvents = (IReadOnlyList<string>)(submitted?.Events ?? []),
            IsAdmin = person.IsAdmin,
        }, createError?.Status ?? status);
    }

    private static async Task<IResult> CreateAsync(HttpContext http, PortcullisDb db, KeySealing sealing, IOptions<NotificationsOptions> options, TimeProvider time,
        CancellationToken cancellationToken)
    {
        var form = await http.Request.ReadFormAsync(cancellationToken);
        var request = new CreateWebhookRequest(form["url"].ToString().Trim(), [.. form["events"].Select(e => e ?? "")]);
        var (created, error) = await WebhooksApi.CreateWebhookAsync(request, http, db, sealing, options.Value, time, cancellationToken);
        // The secret is on this response only, never in a redirect.
        return error is not null
            ? await RenderAsync(http, db, cancellationToken, createError: error, submitted: request)
            : await RenderAsync(http, db, cancellationToken, created: created, status: StatusCodes.Status201Created);
    }

    private static async Task<IResult> DeleteAsync(long id, HttpContext http, PortcullisDb db, CancellationToken cancellationToken) =>
        await WebhooksApi.DeleteWebhookAsync(id, http, db, cancellationToken)
            ? Results.Redirect("/webhooks?done=" + Uri.EscapeDataString("Webhook deleted."))
            : await RenderAsync(http, db, cancellationToken, error: $"You have no webhook {id}.", status: StatusCodes.Status404NotFound);
}
