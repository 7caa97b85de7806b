using System.Data.Common;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.EntityFrameworkCore;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Gateway;

internal sealed record RegisterServiceRequest(string? Name, string? Version, string? Upstream, bool? Protected, string? Description);

internal sealed record ServiceResponse(string Name, string Version, string Upstream, bool Protected, string? Description, string Source, string Path, DateTime RegisteredAt);

/// <summary>The service registry: <c>/api/v1/services</c> (SPEC §4 Services).</summary>
internal static class ServicesApi
{
    public const int MaxDescriptionLength = 500;

    public static RouteGroupBuilder MapServices(this IEndpointRouteBuilder app)
    {
        // Listing needs any credential (a services-only token may ask what it can reach); changes need admin.
        var group = app.MapGroup("/api/v1/services").WithTags("Services").RequireAuthorization(Policies.Authenticated);
        group.MapGet("/", List);
        group.MapPost("/", RegisterAsync).RequireAuthorization(Policies.Admin);
        group.MapDelete("/{key}", RemoveAsync).RequireAuthorization(Policies.Admin);
        return group;
    }

    /// <summary>The services the caller may reach (all of them for <c>services</c> or <c>admin</c>), and every unprotected one.</summary>
    private static Ok<ServiceResponse[]> List(HttpContext http, ServiceRegistry registry)
    {
        var caller = http.Credential();
        var admin = caller.Allows(ScopeRequirement.Admin);
        return TypedResults.Ok(registry.All
            .Where(s => !s.Protected || caller.Allows(ScopeRequirement.ForService(s.Name)))
            .Select(s => ToResponse(s, admin))
            .ToArray());
    }

    internal static async Task<Results<Created<ServiceResponse>, ProblemHttpResult>> RegisterAsync(
        RegisterServiceRequest? request, HttpContext http, PortcullisDb db, ServiceRegistry registry, InvalidationBus bus, AuditLog audit,
        TimeProvider time, CancellationToken cancellationToken)
    {
        if (request is null)
            return ProblemResponses.BadRequest("Send a JSON body such as {\"name\": \"model\", \"version\": \"1.0\", \"upstream\": \"http://127.0.0.1:5000\"}.");
        var errors = ServiceRules.Check(request.Name, request.Version, request.Upstream).ToList();
        if (errors.Count > 0)
            return ProblemResponses.BadRequest(string.Join(" ", errors.Select(e => e.Error)));
        if (request.Description is { Length: > MaxDescriptionLength })
            return ProblemResponses.BadRequest($"The description is {request.Description.Length} characters long; at most {MaxDescriptionLength} are allowed.");
        if (registry.Find(request.Name!, request.Version!) is { } existing)
            return ProblemResponses.Conflict($"The service '{existing.Key}' is already registered (from {existing.Source}). Remove it first, or register another version.");

        var now = time.GetUtcNow().UtcDateTime;
        var caller = http.Credential();
        ServiceRules.TryParseUpstream(request.Upstream, out var upstream);
        await db.Database.OpenConnectionAsync(cancellationToken);
        try
        {
            await Sql.ExecuteAsync(db.Database.GetDbConnection(),
                "INSERT INTO gateway_services (name, version, upstream, protected, description, created_at, created_by) VALUES (@name, @version, @upstream, @protected, @description, @at, @by)",
                cancellationToken, ("@name", request.Name), ("@version", request.Version), ("@upstream", upstream.ToString().TrimEnd('/')),
                ("@protected", request.Protected ?? true), ("@description", request.Description), ("@at", now), ("@by", caller.Owner.Name));
        }
        catch (DbException e) when (IsUniqueViolation(e))
        {
            return ProblemResponses.Conflict($"The service '{request.Name}_{request.Version}' is already registered. Remove it first, or register another version.");
        }
        db.AuditEvents.Add(audit.Create(http, AuditEvents.ServiceRegistered, $"{request.Name}_{request.Version}",
            details: new { upstream = upstream.ToString().TrimEnd('/'), @protected = request.Protected ?? true }));
        await db.SaveChangesAsync(cancellationToken);
        await registry.ReloadAsync(cancellationToken);
        await bus.ServicesChangedAsync(cancellationToken);
        var entry = registry.Find(request.Name!, request.Version!)
            ?? new ServiceEntry(request.Name!, request.Version!, upstream, request.Protected ?? true, request.Description, ServiceEntry.FromApi, now);
        return TypedResults.Created($"/api/v1/services/{entry.Key}", ToResponse(entry, admin: true));
    }

    internal static async Task<Results<NoContent, ProblemHttpResult>> RemoveAsync(
        string key, HttpContext http, PortcullisDb db, ServiceRegistry registry, InvalidationBus bus, AuditLog audit, CancellationToken cancellationToken)
    {
        var separator = key.IndexOf('_');
        if (separator <= 0)
            return ProblemResponses.BadRequest($"Name the service as name_version, e.g. DELETE /api/v1/services/model_1.0.");
        var (name, version) = (key[..separator], key[(separator + 1)..]);
        if (registry.Find(name, version) is { Source: not ServiceEntry.FromApi } fixedEntry)
            return ProblemResponses.Conflict($"The service '{key}' comes from {fixedEntry.Source}; remove it there and restart Portcullis.");
        await db.Database.OpenConnectionAsync(cancellationToken);
        var removed = await Sql.ExecuteAsync(db.Database.GetDbConnection(), "DELETE FROM gateway_services WHERE name = @name AND version = @version",
            cancellationToken, ("@name", name), ("@version", version));
        if (removed == 0)
            return ProblemResponses.NotFound($"There is no service '{key}'. GET /api/v1/services lists them.");
        db.AuditEvents.Add(audit.Create(http, AuditEvents.ServiceRemoved, key));
        await db.SaveChangesAsync(cancellationToken);
        await registry.ReloadAsync(cancellationToken);
        await bus.ServicesChangedAsync(cancellationToken);
        return TypedResults.NoContent();
    }

    private static ServiceResponse ToResponse(ServiceEntry s, bool admin) =>
        // The upstream is an internal address: only admins see it.
        new(s.Name, s.Version, admin ? s.Upstream.ToString().TrimEnd('/') : "", s.Protected, s.Description, s.Source, $"/services/{s.Key}/", s.RegisteredAt);

    private static bool IsUniqueViolation(DbException e) =>
        e is Npgsql.PostgresException { SqlState: "23505" } || (e is Microsoft.Data.Sqlite.SqliteException { SqliteErrorCode: 19 });
}
