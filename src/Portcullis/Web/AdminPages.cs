using System.Text;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Clients;
using Portcullis.Data;
using Portcullis.Gateway;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Services;
using Portcullis.Tokens;
using Portcullis.Users;
using static Portcullis.Web.Html;

namespace Portcullis.Web;

/// <summary>
/// The administration pages (docs/web-ui.md): users, services, OAuth clients, all tokens, the audit log.
/// Admins only; every change goes through the REST API's own handlers, so the rules and the audit
/// events are the same as over the API.
/// </summary>
internal static class AdminPages
{
    public static IEndpointRouteBuilder MapAdminPages(this IEndpointRouteBuilder app)
    {
        var admin = app.MapGroup("/admin").ExcludeFromDescription().AddEndpointFilter(TokenPages.RequireSession).AddEndpointFilter(RequireAdmin);
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
        return app;
    }

    private static async ValueTask<object?> RequireAdmin(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        if (http.Features.Get<Credential>() is not { } credential || !credential.Allows(ScopeRequirement.Admin))
            return Page(http, "Forbidden — Portcullis", "<h1>Forbidden</h1><p>Only administrators may open this page.</p>", StatusCodes.Status403Forbidden);
        return await next(context);
    }

    private static string Csrf(HttpContext http)
    {
        var tokens = http.RequestServices.GetRequiredService<IAntiforgery>().GetAndStoreTokens(http);
        return $"<input type=\"hidden\" name=\"{H(tokens.FormFieldName)}\" value=\"{H(tokens.RequestToken!)}\">";
    }

    private static string Message(string? error, string? done) =>
        (error is null ? "" : $"<p class=\"error\" role=\"alert\">{H(error)}</p>") + (done is null ? "" : $"<p role=\"status\">{H(done)}</p>");

    private static string? Detail(IResult result) => result is ProblemHttpResult p ? p.ProblemDetails.Detail ?? p.ProblemDetails.Title : null;

    // --- Users ---------------------------------------------------------------------------------

    private static async Task<IResult> UsersAsync(HttpContext http, PortcullisDb db, CancellationToken cancellationToken) =>
        await UsersPageAsync(http, db, null, http.Request.Query["done"], StatusCodes.Status200OK, cancellationToken);

    private static async Task<IResult> UsersPageAsync(HttpContext http, PortcullisDb db, string? error, string? done, int status, CancellationToken cancellationToken)
    {
        var users = (await UsersApi.ListAsync(db, cancellationToken)).Value!;
        var csrf = Csrf(http);
        var rows = new StringBuilder();
        foreach (var u in users)
        {
            var n = H(u.Username);
            var actions = u.Kind != PrincipalKind.User ? "<td>configured service</td>" : $"""
                <td>
                  <form class="inline" method="post" action="/admin/users/{n}">{csrf}<input type="hidden" name="action" value="{(u.Disabled ? "enable" : "disable")}"><button type="submit" aria-label="{(u.Disabled ? "Enable" : "Disable")} {n}">{(u.Disabled ? "Enable" : "Disable")}</button></form>
                  <form class="inline" method="post" action="/admin/users/{n}">{csrf}<input type="hidden" name="action" value="{(u.Admin ? "demote" : "promote")}"><button type="submit" aria-label="{(u.Admin ? "Remove admin from" : "Make admin")} {n}">{(u.Admin ? "Remove admin" : "Make admin")}</button></form>
                  <form class="inline" method="post" action="/admin/users/{n}">{csrf}<input type="hidden" name="action" value="password"><label class="inline" for="pw-{n}">New password for {n}</label> <input id="pw-{n}" name="password" type="password" autocomplete="new-password" class="short"> <button type="submit" aria-label="Reset password of {n}">Reset password</button></form>
                </td>
                """;
            rows.Append($"<tr><td>{n}</td><td>{u.Kind}</td><td>{(u.Admin ? "yes" : "")}</td><td>{(u.Disabled ? "<span class=\"revoked\">disabled</span>" : "active")}</td><td>{TokenPages.Date(u.CreatedAt)}</td>{actions}</tr>");
        }
        var body = $"""
            <h1>Users</h1>
            {Message(error, done)}
            <div class="table"><table><thead><tr><th>Username</th><th>Kind</th><th>Admin</th><th>Status</th><th>Created</th><th>Actions</th></tr></thead><tbody>{rows}</tbody></table></div>
            <h2>Create a user</h2>
            <form method="post" action="/admin/users">{csrf}
              <label for="new-username">Username</label><input id="new-username" name="username" required maxlength="64">
              <label for="new-password">Password</label><input id="new-password" name="password" type="password" required autocomplete="new-password">
              <p><input type="checkbox" id="new-admin" name="admin" value="on"> <label class="inline" for="new-admin">Administrator</label></p>
              <button type="submit">Create user</button>
            </form>
            """;
        return Page(http, "Users — Portcullis", body, status);
    }

    private static async Task<IResult> CreateUserAsync(HttpContext http, PortcullisDb db, PasswordHasher hasher, AuditLog audit, TimeProvider time, CancellationToken cancellationToken)
    {
        var form = await http.Request.ReadFormAsync(cancellationToken);
        var result = await UsersApi.CreateAsync(new CreateUserRequest(form["username"], form["password"], form["admin"] == "on"), http, db, hasher, audit, time, cancellationToken);
        if (Detail(result.Result) is { } error)
            return await UsersPageAsync(http, db, error, null, StatusCodes.Status400BadRequest, cancellationToken);
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
            return await UsersPageAsync(http, db, "Unknown action.", null, StatusCodes.Status400BadRequest, cancellationToken);
        var result = await UsersApi.UpdateAsync(name, request, http, db, hasher, audit, bus, time, cancellationToken);
        if (Detail(result.Result) is { } error)
            return await UsersPageAsync(http, db, error, null, StatusCodes.Status400BadRequest, cancellationToken);
        return Results.Redirect("/admin/users?done=" + Uri.EscapeDataString($"User {name} updated."));
    }

    // --- Services ------------------------------------------------------------------------------

    private static IResult ServicesPage(HttpContext http, ServiceRegistry registry, ServiceHosts hosts, Replicas replicas, ManagedProcesses processes) =>
        ServicesPageWith(http, registry, hosts, replicas, processes, null, http.Request.Query["done"], StatusCodes.Status200OK);

    private static IResult ServicesPageWith(HttpContext http, ServiceRegistry registry, ServiceHosts hosts, Replicas replicas, ManagedProcesses processes,
        string? error, string? done, int status)
    {
        var csrf = Csrf(http);
        var rows = new StringBuilder();
        foreach (var s in registry.All)
        {
            var remove = s.Source == ServiceEntry.FromApi
                ? $"<form class=\"inline\" method=\"post\" action=\"/admin/services/{H(s.Key)}/remove\">{csrf}<button type=\"submit\" aria-label=\"Remove {H(s.Key)}\">Remove</button></form>"
                : $"from {H(s.Source)}";
            var destinations = string.Join("<br>", replicas.Health(s).Select(d => $"<code>{H(d.Address)}</code> <span class=\"health-{H(d.Health)}\">{H(d.Health)}</span>"));
            var check = s.HealthCheck is { } c ? $"<br><small>checked: GET {H(c.Path)} every {c.Interval.TotalSeconds:0} s</small>" : "";
            rows.Append($"<tr><td><a href=\"{H(hosts.Origin(s.Label))}/\">{H(s.Name)}</a></td><td>{H(s.Version)}</td><td>{destinations}{check}</td><td>{(s.Protected ? "yes" : "no")}</td><td>{H(s.Description ?? "")}</td><td>{remove}</td></tr>");
        }
        var managed = new StringBuilder();
        foreach (var m in processes.States)
            managed.Append($"<tr><td>{H(m.Name)}</td><td>{H(m.State)}</td><td>{m.Pid?.ToString() ?? ""}</td><td>{m.Restarts}</td><td>{m.LastExitCode?.ToString() ?? ""}</td><td>{(m.StartedAt is { } t ? TokenPages.Date(t) : "")}</td></tr>");
        var body = $"""
            <h1>Manage services</h1>
            {Message(error, done)}
            <div class="table"><table><thead><tr><th>Service</th><th>Version</th><th>Upstreams and health</th><th>Protected</th><th>Description</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>
            <h2>Register a service</h2>
            <form method="post" action="/admin/services">{csrf}
              <label for="svc-name">Service name</label><input id="svc-name" name="name" required maxlength="64">
              <label for="svc-version">Version</label><input id="svc-version" name="version" required maxlength="64">
              <label for="svc-upstream">Upstream URL</label><input id="svc-upstream" name="upstream" required placeholder="http://127.0.0.1:5000" aria-describedby="svc-upstream-help">
              <p id="svc-upstream-help"><small>For replicas, give several URLs separated by spaces.</small></p>
              <label for="svc-health">Health check path (optional)</label><input id="svc-health" name="health_check" placeholder="/healthz" maxlength="200">
              <label for="svc-description">Service description</label><input id="svc-description" name="description" maxlength="500">
              <p><input type="checkbox" id="svc-public" name="public" value="on"> <label class="inline" for="svc-public">Unprotected (anyone may call it)</label></p>
              <button type="submit">Register service</button>
            </form>
            <h2>Managed processes</h2>
            {(managed.Length == 0 ? "<p>None configured.</p>" : $"<div class=\"table\"><table><thead><tr><th>Service</th><th>State</th><th>PID</th><th>Restarts</th><th>Last exit code</th><th>Started</th></tr></thead><tbody>{managed}</tbody></table></div>")}
            """;
        return Page(http, "Manage services — Portcullis", body, status);
    }

    private static async Task<IResult> RegisterServiceAsync(HttpContext http, PortcullisDb db, ServiceRegistry registry, ServiceHosts hosts, Replicas replicas,
        ManagedProcesses processes, InvalidationBus bus, AuditLog audit, TimeProvider time, CancellationToken cancellationToken)
    {
        var form = await http.Request.ReadFormAsync(cancellationToken);
        var upstreams = form["upstream"].ToString().Split((char[])[' ', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries);
        var request = new RegisterServiceRequest(form["name"], form["version"], upstreams.Length == 1 ? upstreams[0] : null, upstreams.Length > 1 ? upstreams : null,
            form["public"] != "on", form["description"].ToString() is { Length: > 0 } d ? d : null,
            form["health_check"].ToString() is { Length: > 0 } path ? new HealthCheckRequest(path, null) : null);
        var result = await ServicesApi.RegisterAsync(request, http, db, registry, hosts, replicas, bus, audit, time, cancellationToken);
        if (Detail(result.Result) is { } error)
            return ServicesPageWith(http, registry, hosts, replicas, processes, error, null, StatusCodes.Status400BadRequest);
        return Results.Redirect("/admin/services?done=" + Uri.EscapeDataString($"Service {request.Name}_{request.Version} registered."));
    }

    private static async Task<IResult> RemoveServiceAsync(string key, HttpContext http, PortcullisDb db, ServiceRegistry registry, ServiceHosts hosts, Replicas replicas,
        ManagedProcesses processes, InvalidationBus bus, AuditLog audit, CancellationToken cancellationToken)
    {
        var result = await ServicesApi.RemoveAsync(key, http, db, registry, bus, audit, cancellationToken);
        if (Detail(result.Result) is { } error)
            return ServicesPageWith(http, registry, hosts, replicas, processes, error, null, StatusCodes.Status400BadRequest);
        return Results.Redirect("/admin/services?done=" + Uri.EscapeDataString($"Service {key} removed."));
    }

    // --- OAuth clients -------------------------------------------------------------------------

    private static async Task<IResult> ClientsAsync(HttpContext http, PortcullisDb db, CancellationToken cancellationToken) =>
        await ClientsPageAsync(http, db, null, http.Request.Query["done"], null, StatusCodes.Status200OK, cancellationToken);

    private static async Task<IResult> ClientsPageAsync(HttpContext http, PortcullisDb db, string? error, string? done, ClientSecretResponse? created, int status, CancellationToken cancellationToken)
    {
        var clients = (await ClientsApi.ListAsync(http, db, null, cancellationToken)).Result is Ok<ClientResponse[]> { Value: { } list } ? list : [];
        var csrf = Csrf(http);
        var rows = new StringBuilder();
        foreach (var c in clients)
            rows.Append($"<tr><td><code>{H(c.ClientId)}</code></td><td>{H(c.Name)}</td><td>{H(c.Owner)}</td><td>{H(string.Join(' ', c.Scopes))}</td><td><code>{H(c.SecretHint)}</code> ({H(c.SecretStatus)})</td>" +
                $"<td><form class=\"inline\" method=\"post\" action=\"/admin/clients/{H(c.ClientId)}/delete\">{csrf}<button type=\"submit\" aria-label=\"Delete client {H(c.Name)}\">Delete</button></form></td></tr>");
        var reveal = created is null ? "" : $"""
            <p class="warning" role="alert">Copy the client secret now: it will not be shown again.</p>
            <label for="client-id">Client ID</label><input id="client-id" readonly value="{H(created.ClientId)}">
            <label for="client-secret">Client secret</label><input id="client-secret" readonly value="{H(created.ClientSecret)}" autocomplete="off">
            <button type="button" data-copy="client-secret">Copy</button>
            <script src="/static/portcullis.js"></script>
            """;
        var body = $"""
            <h1>OAuth clients</h1>
            {Message(error, done)}
            {reveal}
            <div class="table"><table><thead><tr><th>Client ID</th><th>Name</th><th>Owner</th><th>Scopes</th><th>Secret</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>
            <h2>Create a client</h2>
            <form method="post" action="/admin/clients">{csrf}
              <label for="client-name">Client name</label><input id="client-name" name="name" required maxlength="100">
              <label for="client-scopes">Client scopes (space-separated)</label><input id="client-scopes" name="scopes" value="services">
              <button type="submit">Create client</button>
            </form>
            """;
        if (created is not null)
            http.Response.Headers.CacheControl = "no-store";
        return Page(http, "OAuth clients — Portcullis", body, status);
    }

    private static async Task<IResult> CreateClientAsync(HttpContext http, PortcullisDb db, TokenFormat format, AuditLog audit, TimeProvider time, CancellationToken cancellationToken)
    {
        var form = await http.Request.ReadFormAsync(cancellationToken);
        var scopes = form["scopes"].ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var result = await ClientsApi.CreateAsync(new CreateClientRequest(form["name"], scopes), http, db, format, audit, time, cancellationToken);
        if (Detail(result.Result) is { } error)
            return await ClientsPageAsync(http, db, error, null, null, StatusCodes.Status400BadRequest, cancellationToken);
        // Shown on this response only, never through a redirect URL.
        return await ClientsPageAsync(http, db, null, null, ((Created<ClientSecretResponse>)result.Result).Value, StatusCodes.Status201Created, cancellationToken);
    }

    private static async Task<IResult> DeleteClientAsync(string clientId, HttpContext http, PortcullisDb db, AuditLog audit, InvalidationBus bus, CancellationToken cancellationToken)
    {
        var result = await ClientsApi.DeleteAsync(clientId, http, db, audit, bus, cancellationToken);
        if (Detail(result.Result) is { } error)
            return await ClientsPageAsync(http, db, error, null, null, StatusCodes.Status400BadRequest, cancellationToken);
        return Results.Redirect("/admin/clients?done=" + Uri.EscapeDataString($"Client {clientId} deleted."));
    }

    // --- All tokens, audit log -----------------------------------------------------------------

    private static async Task<IResult> TokensAsync(HttpContext http, PortcullisDb db, TimeProvider time, IAntiforgery antiforgery, string? owner, CancellationToken cancellationToken)
    {
        owner = string.IsNullOrWhiteSpace(owner) ? null : owner.Trim();
        var result = await TokensApi.ListAsync(http, db, time, owner, owner is null ? true : null, cancellationToken);
        var tokens = result.Result is Ok<TokenResponse[]> { Value: { } list } ? list : [];
        var body = $"""
            <h1>All tokens</h1>
            <form method="get" action="/admin/tokens">
              <label for="owner">Owner</label><input id="owner" name="owner" value="{H(owner ?? "")}" placeholder="any owner">
              <button type="submit">Filter</button>
            </form>
            {TokenPages.TokenTable(tokens, time.GetUtcNow().UtcDateTime, showOwner: true, antiforgery.GetAndStoreTokens(http))}
            """;
        return Page(http, "All tokens — Portcullis", body);
    }

    private static async Task<IResult> AuditAsync(HttpContext http, PortcullisDb db, long? before, int? limit, CancellationToken cancellationToken)
    {
        var pageSize = limit is >= 1 and <= 500 ? limit.Value : 50;
        var result = await AuditApi.ListAsync(http, db, cancellationToken, pageSize, before);
        if (result.Result is not Ok<AuditPage> { Value: { } page })
            return Page(http, "Audit log — Portcullis", $"<h1>Audit log</h1>{Message(Detail(result.Result), null)}", StatusCodes.Status400BadRequest);
        var rows = new StringBuilder();
        foreach (var e in page.Events)
            rows.Append($"<tr><td>{TokenPages.Date(e.OccurredAt)}</td><td>{H(e.Event)}</td><td>{H(e.Actor ?? "")}</td><td>{H(e.Subject ?? "")}</td><td>{H(e.TokenId ?? "")}</td><td>{H(e.ClientIp ?? "")}</td><td><code>{H(e.Details?.GetRawText() ?? "")}</code></td></tr>");
        var next = page.NextBefore is { } n ? $"<p><a href=\"/admin/audit?before={n}&amp;limit={pageSize}\">Older events</a></p>" : "";
        var body = $"""
            <h1>Audit log</h1>
            <div class="table"><table><thead><tr><th>When</th><th>Event</th><th>Actor</th><th>Subject</th><th>Token</th><th>Address</th><th>Details</th></tr></thead><tbody>{rows}</tbody></table></div>
            {next}
            """;
        return Page(http, "Audit log — Portcullis", body);
    }
}
