using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Notifications;

/// <summary><c>/api/v1/webhooks</c>: a person's own webhooks and the deliveries to them; an admin sees every delivery (docs/notifications.md).</summary>
internal static class WebhooksApi
{
    public const int MaxPerOwner = 10;

    public static IServiceCollection AddNotifications(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<NotificationsOptions>().Bind(configuration.GetSection(NotificationsOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<NotificationsOptions>, NotificationsOptionsValidator>();
        services.AddSingleton<WebhookDispatcher>();
        services.AddHostedService(sp => sp.GetRequiredService<WebhookDispatcher>());
        return services;
    }

    public static RouteGroupBuilder MapWebhooks(this RouteGroupBuilder api)
    {
        var group = api.MapGroup("/webhooks").WithTags("Webhooks");
        group.MapGet("/", ListAsync);
        group.MapPost("/", CreateAsync).Answers((StatusCodes.Status409Conflict, $"The caller already has {MaxPerOwner} webhooks."));
        group.MapDelete("/{id:long}", DeleteAsync);
        group.MapGet("/deliveries", DeliveriesAsync);
        return group;
    }

    private static async Task<Ok<WebhookResponse[]>> ListAsync(HttpContext http, PortcullisDb db, CancellationToken cancellationToken) =>
        TypedResults.Ok(await ListOwnAsync(db, http.Credential().Owner.Id, cancellationToken));

    internal static async Task<WebhookResponse[]> ListOwnAsync(PortcullisDb db, long ownerId, CancellationToken cancellationToken) =>
        (await db.Webhooks.AsNoTracking().Where(w => w.OwnerId == ownerId).OrderBy(w => w.Id).ToListAsync(cancellationToken)).Select(From).ToArray();

    private static WebhookResponse From(Webhook w) => new(w.Id, w.Url, w.Events.Split(' '), w.SecretHint, w.CreatedAt);

    private static async Task<Results<Created<WebhookResponse>, ProblemHttpResult>> CreateAsync(CreateWebhookRequest? request, HttpContext http,
        PortcullisDb db, KeySealing sealing, IOptions<NotificationsOptions> options, TimeProvider time, CancellationToken cancellationToken) =>
        (await CreateWebhookAsync(request ?? new CreateWebhookRequest(null, null), http, db, sealing, options.Value, time, cancellationToken))
            .AsCreatedSecret(http, w => $"/api/v1/webhooks/{w.Id}");

    /// <summary>
    /// Adds a webhook for the caller's own tokens, with a new signing secret from the CSPRNG, shown in this answer only.
    /// The API and the web UI both come here.
    /// </summary>
    internal static async Task<Checked<WebhookResponse>> CreateWebhookAsync(CreateWebhookRequest request, HttpContext http, PortcullisDb db,
        KeySealing sealing, NotificationsOptions options, TimeProvider time, CancellationToken cancellationToken)
    {
        var owner = http.Credential().Owner;
        if (WebhookRules.CheckUrl(request.Url) is { } urlError)
            return new RuleError("url", urlError);
        // A literal address is refused at once; a name is checked on what it resolves to, each time a delivery connects.
        if (!options.AllowLocalTargets && IPAddress.TryParse(new Uri(request.Url!).IdnHost, out var literal) && WebhookRules.IsLocal(literal))
            return new RuleError("url", "A webhook may not point at this machine or at a link-local address (Notifications:AllowLocalTargets).");
        var events = request.Events?.Distinct().ToArray();
        if (WebhookRules.CheckEvents(events) is { } eventError)
            return new RuleError("events", eventError);
        if (await db.Webhooks.CountAsync(w => w.OwnerId == owner.Id, cancellationToken) >= MaxPerOwner)
            return RuleError.Conflict("url", $"You have {MaxPerOwner} webhooks already; delete one first.");

        var secret = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
        var webhook = new Webhook
        {
            OwnerId = owner.Id,
            Url = request.Url!,
            Events = string.Join(' ', events!),
            SealedSecret = "",
            SecretHint = secret[..6] + "…",
            CreatedAt = time.GetUtcNow().UtcDateTime,
        };
        await using var tx = await db.Database.BeginTransactionAsync(cancellationToken);
        db.Webhooks.Add(webhook);
        await db.SaveChangesAsync(cancellationToken);
        // Sealed under its own id, so a sealed secret moved to another row is refused.
        webhook.SealedSecret = sealing.Seal(Encoding.UTF8.GetBytes(secret), KeySealing.WebhookSecrets, webhook.Id.ToString(CultureInfo.InvariantCulture));
        await db.SaveChangesAsync(cancellationToken);
        await tx.CommitAsync(cancellationToken);
        return From(webhook) with { Secret = secret };
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> DeleteAsync(long id, HttpContext http, PortcullisDb db, CancellationToken cancellationToken) =>
        await DeleteWebhookAsync(id, http, db, cancellationToken) ? TypedResults.NoContent() : ProblemResponses.NotFound($"You have no webhook {id}.");

    /// <summary>Deletes one of the caller's webhooks, and with it the deliveries still waiting for it.</summary>
    internal static async Task<bool> DeleteWebhookAsync(long id, HttpContext http, PortcullisDb db, CancellationToken cancellationToken)
    {
        var owner = http.Credential().Owner.Id;
        return await db.Webhooks.Where(w => w.Id == id && w.OwnerId == owner).ExecuteDeleteAsync(cancellationToken) == 1;
    }

    private static async Task<Results<Ok<WebhookDeliveryResponse[]>, ProblemHttpResult>> DeliveriesAsync(HttpContext http, PortcullisDb db,
        CancellationToken cancellationToken, bool? all = null, int limit = 100)
    {
        if (limit is < 1 or > 1000)
            return ProblemResponses.BadRequest("limit must be between 1 and 1000.");
        var caller = http.Credential();
        if (all == true && !caller.Exercise(ScopeRequirement.Admin, http))
            return ProblemResponses.Forbidden("Only admins may see every delivery ('all').");
        return TypedResults.Ok(await ListDeliveriesAsync(db, all == true ? null : caller.Owner.Id, limit, cancellationToken));
    }

    /// <summary>The latest deliveries: to the webhooks of <paramref name="ownerId"/>, or to every webhook (the configuration's included).</summary>
    internal static async Task<WebhookDeliveryResponse[]> ListDeliveriesAsync(PortcullisDb db, long? ownerId, int limit, CancellationToken cancellationToken)
    {
        var query = db.WebhookDeliveries.AsNoTracking();
        if (ownerId is { } owner)
            query = query.Where(d => d.OwnerId == owner);
        var rows = await query.OrderByDescending(d => d.Id).Take(limit).ToListAsync(cancellationToken);
        return rows.Select(d => new WebhookDeliveryResponse(d.DeliveryId, d.Event, WebhookDispatcher.TargetOf(d.Url), d.Status, d.Attempts, d.CreatedAt,
            d.DeliveredAt, d.Status == WebhookDelivery.Pending ? d.NextAttemptAt : null, d.LastStatus, d.LastError, Configured: d.WebhookId is null)).ToArray();
    }
}
