using System.Data.Common;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.EntityFrameworkCore;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Gateway;

/// <summary>The service registry: <c>/api/v1/services</c> (docs/gateway.md).</summary>
internal static class ServicesApi
{
    public const int MaxDescriptionLength = 500;

    public static RouteGroupBuilder MapServices(this IEndpointRouteBuilder app)
    {
        // Listing needs any credential (a services-only token may ask what it can reach); changes need admin.
        var group = app.MapGroup("/api/v1/services").WithTags("Services").RequireAuthorization(Policies.Authenticated);
        group.MapGet("/", List);
        group.MapPost("/", RegisterAsync).RequireAuthorization(Policies.Admin)
            .Answers((StatusCodes.Status409Conflict, "That name and version are registered, or would share a host name with another service."));
        group.MapDelete("/{key}", RemoveAsync).RequireAuthorization(Policies.Admin);
        return group;
    }

    /// <summary>The services the caller may reach (all of them for <c>services</c> or <c>admin</c>), and every unprotected one.</summary>
    private static Ok<ServiceResponse[]> List(HttpContext http, ServiceRegistry registry, ServiceHosts hosts, Replicas replicas)
    {
        var caller = http.Credential();
        var admin = caller.Exercise(ScopeRequirement.Admin, http);
        return TypedResults.Ok(registry.ReachableBy(caller)
            .Select(s => ToResponse(s, admin, hosts, replicas))
            .ToArray());
    }

    private static async Task<Results<Created<ServiceResponse>, ProblemHttpResult>> RegisterAsync(
        RegisterServiceRequest? request, HttpContext http, PortcullisDb db, ServiceRegistry registry, ServiceHosts hosts, Replicas replicas, InvalidationBus bus,
        AuditLog audit, TimeProvider time, CancellationToken cancellationToken)
    {
        if (request is null)
            return ProblemResponses.BadRequest("Send a JSON body such as {\"name\": \"model\", \"version\": \"1.0\", \"upstream\": \"http://127.0.0.1:5000\"}.");
        var (entry, error) = await RegisterServiceAsync(request, http, db, registry, bus, audit, time, cancellationToken);
        return error is null ? TypedResults.Created($"/api/v1/services/{entry!.Key}", ToResponse(entry, admin: true, hosts, replicas)) : error.ToProblem();
    }

    /// <summary>Registers a service behind the gateway (docs/gateway.md), audited, and tells every instance. The API and the web UI both come here.</summary>
    internal static async Task<Checked<ServiceEntry>> RegisterServiceAsync(
        RegisterServiceRequest request, HttpContext http, PortcullisDb db, ServiceRegistry registry, InvalidationBus bus,
        AuditLog audit, TimeProvider time, CancellationToken cancellationToken)
    {
        if (request.Upstream is not null && request.Upstreams is { Length: > 0 })
            return new RuleError("upstreams", "Give either 'upstream' (one address) or 'upstreams' (the replicas), not both.");
        IReadOnlyList<string?> upstreamTexts = request.Upstreams is { Length: > 0 } many ? many : request.Upstream is null ? [] : [request.Upstream];
        var interval = request.HealthCheck?.IntervalSeconds is { } seconds ? TimeSpan.FromSeconds(seconds) : (TimeSpan?)null;
        if (request.HealthCheck is { Path: null })
            return new RuleError("health_check", "The health check needs a 'path', e.g. {\"path\": \"/healthz\", \"interval_seconds\": 10}.");
        var errors = ServiceRules.Check(request.Name, request.Version, upstreamTexts, request.HealthCheck?.Path, interval).ToList();
        if (errors.Count > 0)
            return new RuleError(errors[0].Field, string.Join(" ", errors.Select(e => e.Error)));
        if (request.Description is { Length: > MaxDescriptionLength })
            return new RuleError("description", $"The description is {request.Description.Length} characters long; at most {MaxDescriptionLength} are allowed.");
        if (registry.Find(request.Name!, request.Version!) is { } existing)
            return RuleError.Conflict("version", $"The service '{existing.Key}' is already registered (from {existing.Source}). Remove it first, or register another version.");
        if (registry.LabelTakenBy(request.Name!, request.Version!) is { } clash)
            return RuleError.Conflict("name", $"The service '{request.Name}_{request.Version}' would have the same host name as '{clash.Key}' ({ServiceHosts.Label(request.Name!, request.Version!)}). Choose another name or version.");

        var now = time.GetUtcNow().UtcDateTime;
        var caller = http.Credential();
        var upstreams = upstreamTexts.Select(u => ServiceRules.TryParseUpstream(u, out var uri) ? uri.ToString().TrimEnd('/') : "").ToArray();
        // The service and its audit event are saved together.
        db.GatewayServices.Add(new StoredService
        {
            Name = request.Name!,
            Version = request.Version!,
            Upstream = string.Join('\n', upstreams),
            Protected = request.Protected ?? true,
            Description = request.Description,
            CreatedAt = now,
            CreatedBy = caller.Owner.Name,
            HealthCheckPath = request.HealthCheck?.Path,
            HealthCheckIntervalSeconds = request.HealthCheck is null ? null : (int)(interval ?? TimeSpan.FromSeconds(10)).TotalSeconds,
        });
        db.AuditEvents.Add(audit.Create(http, AuditEvents.ServiceRegistered, $"{request.Name}_{request.Version}",
            details: new { upstreams, @protected = request.Protected ?? true, health_check = request.HealthCheck?.Path }));
        try
        {
            await db.SaveChangesAsync(cancellationToken);
        }
        catch (DbUpdateException e) when (DatabaseFailures.IsUniqueViolation(e))
        {
            return RuleError.Conflict("version", $"The service '{request.Name}_{request.Version}' is already registered. Remove it first, or register another version.");
        }
        await registry.ReloadAsync(cancellationToken);
        await bus.ServicesChangedAsync(cancellationToken);
        return registry.Find(request.Name!, request.Version!)
            ?? new ServiceEntry(request.Name!, request.Version!, [.. upstreams.Select(u => new Uri(u))], request.Protected ?? true, request.Description, ServiceEntry.FromApi, now);
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> RemoveAsync(
        string key, HttpContext http, PortcullisDb db, ServiceRegistry registry, InvalidationBus bus, AuditLog audit, CancellationToken cancellationToken) =>
        await RemoveServiceAsync(key, http, db, registry, bus, audit, cancellationToken) is { } error ? error.ToProblem() : TypedResults.NoContent();

    /// <summary>Removes a service registered through the API (name_version), audited; those from the configuration stay.</summary>
    internal static async Task<RuleError?> RemoveServiceAsync(
        string key, HttpContext http, PortcullisDb db, ServiceRegistry registry, InvalidationBus bus, AuditLog audit, CancellationToken cancellationToken)
    {
        var separator = key.IndexOf('_');
        if (separator <= 0)
            return new RuleError("key", $"Name the service as name_version, e.g. DELETE /api/v1/services/model_1.0.");
        var (name, version) = (key[..separator], key[(separator + 1)..]);
        if (registry.Find(name, version) is { Source: not ServiceEntry.FromApi } fixedEntry)
            return RuleError.Conflict("key", $"The service '{key}' comes from {fixedEntry.Source}; remove it there and restart Portcullis.");
        var removed = await db.GatewayServices.Where(s => s.Name == name && s.Version == version).ExecuteDeleteAsync(cancellationToken);
        if (removed == 0)
            return new RuleError("key", $"There is no service '{key}'. GET /api/v1/services lists them.", StatusCodes.Status404NotFound);
        db.AuditEvents.Add(audit.Create(http, AuditEvents.ServiceRemoved, key));
        await db.SaveChangesAsync(cancellationToken);
        await registry.ReloadAsync(cancellationToken);
        await bus.ServicesChangedAsync(cancellationToken);
        return null;
    }

    internal static ServiceResponse ToResponse(ServiceEntry s, bool admin, ServiceHosts hosts, Replicas replicas) =>
        // Upstreams are internal addresses: only admins see them, and the replicas' health.
        new(s.Name, s.Version, admin ? s.UpstreamTexts.First() : "", admin ? [.. s.UpstreamTexts] : [], s.Protected, s.Description, s.Source,
            $"/services/{s.Key}/", hosts.Origin(s.Label) + "/", s.RegisteredAt,
            s.HealthCheck is { } check ? new HealthCheckRequest(check.Path, (int)check.Interval.TotalSeconds) : null,
            admin ? replicas.Health(s) : null);
}

/// <summary>A row of <c>gateway_services</c>: a service registered through the API (replicas one per line in <see cref="Upstream"/>).</summary>
internal sealed class StoredService
{
    public long Id { get; init; }
    public required string Name { get; init; }
    public required string Version { get; init; }
    public required string Upstream { get; init; }
    public bool Protected { get; init; }
    public string? Description { get; init; }
    public DateTime CreatedAt { get; init; }
    public string? CreatedBy { get; init; }
    public string? HealthCheckPath { get; init; }
    public int? HealthCheckIntervalSeconds { get; init; }
}
