using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
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

/// <summary><c>GET /api/v1/audit?limit=&amp;before=</c>: admins see everything, others their own events.</summary>
internal static class AuditApi
{
    public static RouteGroupBuilder MapAudit(this RouteGroupBuilder api)
    {
        api.MapGet("/audit", ListAsync).WithTags("Audit");
        return api;
    }

    internal static async Task<Results<Ok<AuditPage>, ProblemHttpResult>> ListAsync(
        HttpContext http, PortcullisDb db, CancellationToken cancellationToken, int limit = 100, long? before = null)
    {
        if (limit is < 1 or > 1000)
            return ProblemResponses.BadRequest("limit must be between 1 and 1000.");
        var caller = http.Credential();
        var query = db.AuditEvents.AsNoTracking();
        if (!caller.Allows(ScopeRequirement.Admin))
            query = query.Where(e => e.ActorId == caller.Owner.Id || e.SubjectId == caller.Owner.Id);
        if (before is { } b)
            query = query.Where(e => e.Id < b);
        var events = await query.OrderByDescending(e => e.Id).Take(limit).ToListAsync(cancellationToken);
        var next = events.Count == limit ? events[^1].Id : (long?)null;
        return TypedResults.Ok(new AuditPage(events.Select(AuditEventResponse.From).ToArray(), next));
    }
}
