using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.OAuth;
using Portcullis.Data;
using Portcullis.Gateway;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.ServicePrincipals;
using Portcullis.Tokens;
using Portcullis.Users;
using Portcullis.Web.Pages;

namespace Portcullis.Web;

/// <summary>
/// The administration pages (docs/web-ui.md): users, services, OAuth clients, all tokens, the audit log, the trusted issuers.
/// Admins only; every change goes through the REST API's own handlers, so the rules and the audit
/// events are the same as over the API.
/// </summary>
internal static class AdminPages
{
    public static IEndpointRouteBuilder MapAdminPages(this IEndpointRouteBuilder app)
    {
        var admin = app.MapGroup("/admin").AsWebPages().AddEndpointFilter(TokenPages.RequireSession).AddEndpointFilter(RequireAdmin);
        admin.MapGet("/users", UsersAsync);
        admin.MapPost("/users", CreateUserAsync).DisableAntiforgery();
        admin.MapPost("/users/{name}", UpdateUserAsync).DisableAntiforgery();
        admin.MapGet("/services", ServicesPage);
        admin.MapPost("/services", RegisterServiceAsync).DisableAntiforgery();
        admin.MapPost("/services/{key}/remove", RemoveServiceAsync).DisableAntiforgery();
        admin.MapGet("/clients", ClientsAsync);
        admin.MapPost("/clients", CreateClientAsync).DisableAntiforgery();
        admin.MapPost("/clients/{clientId}/delete", DeleteClientAsync).DisableAntiforgery();
        admin.MapGet("/tokens", TokensAsync);
        admin.MapGet("/audit", AuditAsync);
        admin.MapGet("/issuers", TrustedIssuersAsync);
        return app;
    }

    private static async ValueTask<object?> RequireAdmin(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        if (http.Features.Get<Credential>() is not { } credential || !credential.Allows(ScopeRequirement.Admin))
            return PageResults.Render<MessagePage>(http, new { Title = "Forbidden", Text = "Only administrators may open this page." }, StatusCodes.Status403Forbidden);
        return await next(context);
    }

    // --- Users ---------------------------------------------------------------------------------

    private static async Task<IResult> UsersAsync(HttpContext http, PortcullisDb db, CancellationToken cancellationToken) =>
        await UsersPageAsync(http, db, null, http.Request.Query["done"], cancellationToken);

    private static async Task<IResult> UsersPageAsync(HttpContext http, PortcullisDb db, RuleError? error, string? done, CancellationToken cancellationToken,
        RuleError? createError = null, string? username = null) =>
        PageResults.Render<UsersPage>(http, new
        {
            Users = await UsersApi.ListAllAsync(db, cancellationToken), Error = error?.Message, Done = done, CreateError = createError, Username = username,
        }, (error ?? createError)?.Status ?? StatusCodes.Status200OK);

    private static async Task<IResult> CreateUserAsync(HttpContext http, PortcullisDb db, PasswordHasher hasher, AuditLog audit, TimeProvider time, CancellationToken cancellationToken)
    {
        var form = await http.Request.ReadFormAsync(cancellationToken);
        var (_, error) = await UsersApi.CreateUserAsync(new CreateUserRequest(form["username"], form["password"], form["admin"] == "on"), http, db, hasher, audit, time, cancellationToken);
        if (error is not null)
            return await UsersPageAsync(http, db, null, null, cancellationToken, createError: error, username: form["username"]);
        return Results.Redirect("/admin/users?done=" + Uri.EscapeDataString($"User {form["username"]} created."));
    }

    private static async Task<IResult> UpdateUserAsync(string name, HttpContext http, PortcullisDb db, PasswordHasher hasher, AuditLog audit, InvalidationBus bus,
        TimeProvider time, CancellationToken cancellationToken)
    {
        var form = await http.Request.ReadFormAsync(cancellationToken);
        UpdateUserRequest? request = form["action"].ToString() switch
        {
            "disable" => new(null, true, null),
            "enable" => new(null, false, null),
            "promote" => new(true, null, null),
            "demote" => new(false, null, null),
            "password" => new(null, null, form["password"].ToString()),
            _ => null,
        };
        if (request is null)
            return await UsersPageAsync(http, db, new RuleError("action", "Unknown action."), null, cancellationToken);
        var (_, error) = await UsersApi.UpdateUserAsync(name, request, http, db, hasher, audit, bus, time, cancellationToken);
        if (error is not null)
            return await UsersPageAsync(http, db, error, null, cancellationToken);
        return Results.Redirect("/admin/users?done=" + Uri.EscapeDataString($"User {name} updated."));
    }

    // --- Services ------------------------------------------------------------------------------

    private static IResult ServicesPage(HttpContext http, ServiceRegistry registry, ServiceHosts hosts, Replicas replicas, ManagedProcesses processes) =>
        ServicesPageWith(http, registry, hosts, replicas, processes, null, http.Request.Query["done"]);

    private static IResult ServicesPageWith(HttpContext http, ServiceRegistry registry, ServiceHosts hosts, Replicas replicas, ManagedProcesses processes,
        RuleError? error, string? done, RuleError? createError = null, RegisterServiceRequest? submitted = null) =>
        PageResults.Render<AdminServicesPage>(http, new
        {
            Services = registry.All.Select(s => ServiceRow.From(s, hosts, replicas)).ToList(),
            Processes = processes.States,
            Error = error?.Message,
            Done = done,
            // The form has one field for every replica's URL.
            CreateError = createError is { Field: "upstreams" } ? createError with { Field = "upstream" } : createError,
            Submitted = submitted,
        }, (error ?? createError)?.Status ?? StatusCodes.Status200OK);

    private static async Task<IResult> RegisterServiceAsync(HttpContext http, PortcullisDb db, ServiceRegistry registry, ServiceHosts hosts, Replicas replicas,
        ManagedProcesses processes, InvalidationBus bus, AuditLog audit, TimeProvider time, CancellationToken cancellationToken)
    {
        var form = await http.Request.ReadFormAsync(cancellationToken);
        var upstreams = form["upstream"].ToString().Split((char[])[' ', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries);
        var request = new RegisterServiceRequest(form["name"], form["version"], upstreams.Length == 1 ? upstreams[0] : null, upstreams.Length > 1 ? upstreams : null,
            form["public"] != "on", form["description"].ToString() is { Length: > 0 } d ? d : null,
            form["health_check"].ToString() is { Length: > 0 } path ? new HealthCheckRequest(path, null) : null);
        var (_, error) = await ServicesApi.RegisterServiceAsync(request, http, db, registry, bus, audit, time, cancellationToken);
        if (error is not null)
            return ServicesPageWith(http, registry, hosts, replicas, processes, null, null, createError: error, submitted: request);
        return Results.Redirect("/admin/services?done=" + Uri.EscapeDataString($"Service {request.Name}_{request.Version} registered."));
    }

    private static async Task<IResult> RemoveServiceAsync(string key, HttpContext http, PortcullisDb db, ServiceRegistry registry, ServiceHosts hosts, Replicas replicas,
        ManagedProcesses processes, InvalidationBus bus, AuditLog audit, CancellationToken cancellationToken)
    {
        if (await ServicesApi.RemoveServiceAsync(key, http, db, registry, bus, audit, cancellationToken) is { } error)
            return ServicesPageWith(http, registry, hosts, replicas, processes, error, null);
        return Results.Redirect("/admin/services?done=" + Uri.EscapeDataString($"Service {key} removed."));
    }

    // --- OAuth clients -------------------------------------------------------------------------

    private static async Task<IResult> ClientsAsync(HttpContext http, PortcullisDb db, CancellationToken cancellationToken) =>
        await ClientsPageAsync(http, db, null, http.Request.Query["done"], null, StatusCodes.Status200OK, cancellationToken);

    private static async Task<IResult> ClientsPageAsync(HttpContext http, PortcullisDb db, string? error, string? done, ClientSecretResponse? created, int status,
        CancellationToken cancellationToken, RuleError? createError = null, CreateClientRequest? submitted = null) =>
        PageResults.Render<ClientsPage>(http, new
        {
            Clients = await ClientsApi.ListAllAsync(db, null, cancellationToken), Created = created, Error = error, Done = done, CreateError = createError, Submitted = submitted,
        }, status);

    private static async Task<IResult> CreateClientAsync(HttpContext http, PortcullisDb db, TokenFormat format, AuditLog audit, TimeProvider time, CancellationToken cancellationToken)
    {
        var form = await http.Request.ReadFormAsync(cancellationToken);
        var scopes = form["scopes"].ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var request = new CreateClientRequest(form["name"], scopes);
        var (created, error) = await ClientsApi.CreateClientAsync(request, http, db, format, audit, time, cancellationToken);
        if (error is not null)
            return await ClientsPageAsync(http, db, null, null, null, error.Status, cancellationToken, createError: error, submitted: request);
        // Shown on this response only, never through a redirect URL.
        return await ClientsPageAsync(http, db, null, null, created, StatusCodes.Status201Created, cancellationToken);
    }

    private static async Task<IResult> DeleteClientAsync(string clientId, HttpContext http, PortcullisDb db, AuditLog audit, InvalidationBus bus, CancellationToken cancellationToken)
    {
        if (!await ClientsApi.DeleteClientAsync(clientId, http, db, audit, bus, cancellationToken))
            return await ClientsPageAsync(http, db, $"There is no OAuth client '{clientId}'.", null, null, StatusCodes.Status404NotFound, cancellationToken);
        return Results.Redirect("/admin/clients?done=" + Uri.EscapeDataString($"Client {clientId} deleted."));
    }

    // --- All tokens, audit log -----------------------------------------------------------------

    private static async Task<IResult> TokensAsync(HttpContext http, PortcullisDb db, TimeProvider time, string? owner, string? deleted, CancellationToken cancellationToken)
    {
        owner = string.IsNullOrWhiteSpace(owner) ? null : owner.Trim();
        var now = time.GetUtcNow().UtcDateTime;
        var tokens = await TokensApi.ListAllAsync(db, now, owner, cancellationToken);
        return PageResults.Render<AllTokensPage>(http, new { Tokens = tokens, Now = now, Owner = owner, Deleted = deleted });
    }

    /// <summary>The trusted issuers with their rules and keys, and the latest exchanges and refusals (docs/trusted-issuers.md).</summary>
    private static async Task<IResult> TrustedIssuersAsync(HttpContext http, PortcullisDb db, Federation.TrustedIssuers issuers, CancellationToken cancellationToken) =>
        PageResults.Render<TrustedIssuersPage>(http, new
        {
            Issuers = issuers.Views(),
            Exchanges = await AuditApi.ReadAsync(db, principalId: null, 50, null, cancellationToken, AuditEvents.TokenExchanged),
            Refusals = await AuditApi.ReadAsync(db, principalId: null, 20, null, cancellationToken, AuditEvents.TokenExchangeRefused),
        });

    private static async Task<IResult> AuditAsync(HttpContext http, PortcullisDb db, long? before, int? limit, CancellationToken cancellationToken)
    {
        var pageSize = limit is >= 1 and <= 500 ? limit.Value : 50;
        var page = await AuditApi.ReadAsync(db, principalId: null, pageSize, before, cancellationToken);
        return PageResults.Render<AuditLogPage>(http, new { Page = page, Limit = pageSize });
    }
}
