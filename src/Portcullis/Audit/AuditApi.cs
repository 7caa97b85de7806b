using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.EntityFrameworkCore;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Security;

namespace Portcullis.Audit;

public sealed record AuditEventResponse(long Id, DateTime OccurredAt, string Event, string? Actor, string? Subject, string? TokenId, string? ClientIp, JsonElement? Details)
{
    internal static AuditEventResponse From(AuditEvent e) =>
        new(e.Id, e.OccurredAt, e.Event, e.Actor, e.Subject, e.TokenId, e.ClientIp, e.Details is null ? null : JsonDocument.Parse(e.Details).RootElement);
}

public sealed record AuditPage(AuditEventResponse[] Events, long? NextBefore);

/// <summary><c>GET /api/v1/audit?limit=&amp;before=&amp;event=</c>: admins see everything, others their own events.</summary>
internal static class AuditApi
{
    /// <summary>The audit log, written behind requests (docs/decisions.md, "Audit log").</summary>
    public static IServiceCollection AddAudit(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<AuditOptions>().Bind(configuration.GetSection(AuditOptions.Section));
        services.AddSingleton<AuditLog>();
        services.AddHostedService(sp => sp.GetRequiredService<AuditLog>());
        return services;
    }

    public static RouteGroupBuilder MapAudit(this RouteGroupBuilder api)
    {
        api.MapGet("/audit", ListAsync).WithTags("Audit");
        return api;
    }

    private static async Task<Results<Ok<AuditPage>, ProblemHttpResult>> ListAsync(
        HttpContext http, PortcullisDb db, CancellationToken cancellationToken, int limit = 100, long? before = null,
        [FromQuery(Name = "event")] string? eventName = null)
    {
        if (limit is < 1 or > 1000)
            return ProblemResponses.BadRequest("limit must be between 1 and 1000.");
        var caller = http.Credential();
        return TypedResults.Ok(await ReadAsync(db, caller.Exercise(ScopeRequirement.Admin, http) ? null : caller.Owner.Id, limit, before, cancellationToken, eventName));
    }

    /// <summary>
    /// Up to <paramref name="limit"/> events older than <paramref name="before"/>, newest first: every event, or only those
    /// <paramref name="principalId"/> did or underwent; only events named <paramref name="eventName"/>, when given.
    /// </summary>
    internal static async Task<AuditPage> ReadAsync(PortcullisDb db, long? principalId, int limit, long? before, CancellationToken cancellationToken,
        string? eventName = null)
    {
        var query = db.AuditEvents.AsNoTracking();
        if (principalId is { } id)
            query = query.Where(e => e.ActorId == id || e.SubjectId == id);
        if (eventName is not null)
            query = query.Where(e => e.Event == eventName);
        if (before is { } b)
            query = query.Where(e => e.Id < b);
        var events = await query.OrderByDescending(e => e.Id).Take(limit).ToListAsync(cancellationToken);
        var next = events.Count == limit ? events[^1].Id : (long?)null;
        return new AuditPage(events.Select(AuditEventResponse.From).ToArray(), next);
    }
}
