using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.EntityFrameworkCore;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Users;

namespace Portcullis.OAuth;

/// <summary>OAuth clients: <c>/api/v1/clients</c> (docs/decisions.md). Secrets are shown once, at creation and rotation.</summary>
internal static class ClientsApi
{
    /// <summary>OAuth clients: their cache, their authentication at the token endpoint, the client-credentials grant, the clean-up.</summary>
    public static IServiceCollection AddOAuthClients(this IServiceCollection services)
    {
        services.AddSingleton<ClientCache>();
        services.AddSingleton<ClientAuthenticator>();
        services.AddSingleton<ClientCredentialsGrant>();
        services.AddHostedService<OAuthMaintenance>();
        return services;
    }

    public const int MaxNameLength = 100;

    public static RouteGroupBuilder MapClients(this RouteGroupBuilder api)
    {
        var group = api.MapGroup("/clients").WithTags("OAuth clients");
        group.MapPost("/", CreateAsync).NotForClientCredentials().NotForFencedTokens()
            .Answers((StatusCodes.Status409Conflict, "The caller already has a client of that name."));
        group.MapGet("/", ListAsync);
        group.MapGet("/{clientId}", GetAsync);
        group.MapDelete("/{clientId}", DeleteAsync).NotForClientCredentials();
        group.MapPost("/{clientId}/rotate-secret", RotateSecretAsync).NotForClientCredentials().NotForFencedTokens();
        return group;
    }

    private static async Task<Results<Created<ClientSecretResponse>, ProblemHttpResult>> CreateAsync(
        CreateClientRequest? request, HttpContext http, PortcullisDb db, TokenFormat format, AuditLog audit, TimeProvider time,
        CancellationToken cancellationToken)
    {
        if (request is null)
            return ProblemResponses.BadRequest("Send a JSON body such as {\"name\": \"ci-deployer\", \"scopes\": [\"services\"]}.");
        return (await CreateClientAsync(request, http, db, format, audit, time, cancellationToken)).AsCreatedSecret(http, c => $"/api/v1/clients/{c.ClientId}");
    }

    /// <summary>
    /// Creates an OAuth client owned by the caller (docs/decisions.md, "OAuth clients"), audited; its secret is in the answer only.
    /// The API and the web UI both come here.
    /// </summary>
    internal static async Task<Checked<ClientSecretResponse>> CreateClientAsync(
        CreateClientRequest request, HttpContext http, PortcullisDb db, TokenFormat format, AuditLog audit, TimeProvider time,
        CancellationToken cancellationToken)
    {
        var caller = http.Credential();
        if (caller.Owner.IsService)
            return RuleError.Forbidden("owner", "OAuth clients belong to users; a service uses its own tokens.");
        // A client must not be able to mint further clients that would outlive its own secret.
        if (caller.ThroughOAuthClient)
            return RuleError.Forbidden("owner", "An OAuth client's access token cannot create OAuth clients. Use an API token or log in.");
        if (ValidateName(request.Name) is { } nameError)
            return new RuleError("name", nameError);
        if (request.Scopes is null || request.Scopes.Length == 0)
            return new RuleError("scopes", "A client needs scopes, e.g. [\"services\"] or [\"api\"].");
        if (!ScopeSet.TryParse(request.Scopes, out var scopes, out var scopeError))
            return new RuleError("scopes", scopeError!);
        // Nobody mints more than they have: the creating credential's effective scopes bound the client.
        if (!scopes.IsSubsetOf(caller.Effective))
            return new RuleError("scopes", $"The requested scopes '{scopes}' exceed what you may grant with this credential: '{caller.Effective}'.");
        caller.ExerciseAll(scopes, http);

        var name = request.Name!.Trim();
        if (await db.OAuthClients.AnyAsync(c => c.OwnerId == caller.Owner.Id && c.Name == name, cancellationToken))
            return NameTaken(name);

        var now = time.GetUtcNow().UtcDateTime;
        var secret = format.Generate(TokenKind.ClientSecret);
        var client = new OAuthClient
        {
            ClientId = ClientCache.NewClientId(),
            OwnerId = caller.Owner.Id,
            Name = name,
            Scopes = scopes.ToString(),
            SecretHash = TokenFormat.Digest(secret).ToHex(),
            SecretHint = format.Hint(secret),
            SecretCreatedAt = now,
            CreatedAt = now,
            CreatedBy = caller.Owner.Name,
        };
        await using (var tx = await db.Database.BeginTransactionAsync(cancellationToken))
        {
            db.OAuthClients.Add(client);
            db.AuditEvents.Add(audit.Create(http, AuditEvents.ClientCreated, caller.Owner.Name, caller.Owner.Id,
                details: new { client_id = client.ClientId, name, scopes = client.Scopes, hint = client.SecretHint }));
            try
            {
                await db.SaveChangesAsync(cancellationToken);
            }
            catch (DbUpdateException e) when (DatabaseFailures.IsUniqueViolation(e))
            {
                // The unique index on (owner, name) caught a concurrent creation with the same name.
                return NameTaken(name);
            }
            await tx.CommitAsync(cancellationToken);
        }
        return ClientSecretResponse.From(client, secret, caller.Owner.Name);
    }

    private static RuleError NameTaken(string name) =>
        RuleError.Conflict("name", $"You already have an OAuth client named '{name}'. Choose another name, or delete the old client first.");

    /// <summary>Your own clients; an admin sees everyone's, or one owner's with <c>?owner=NAME</c>.</summary>
    private static async Task<Results<Ok<ClientResponse[]>, ProblemHttpResult>> ListAsync(
        HttpContext http, PortcullisDb db, string? owner, CancellationToken cancellationToken)
    {
        var caller = http.Credential();
        if (caller.Exercise(ScopeRequirement.Admin, http))
            return TypedResults.Ok(await ListAllAsync(db, owner, cancellationToken));
        if (owner is not null && User.Normalize(owner) != User.Normalize(caller.Owner.Name))
            return ProblemResponses.Forbidden("Only admins may list other users' OAuth clients.");
        return TypedResults.Ok(await DescribeAsync(db.OAuthClients.AsNoTracking().Where(c => c.OwnerId == caller.Owner.Id), db.Users.AsNoTracking(), cancellationToken));
    }

    /// <summary>Every client, or those of the user named <paramref name="owner"/>; newest first.</summary>
    internal static Task<ClientResponse[]> ListAllAsync(PortcullisDb db, string? owner, CancellationToken cancellationToken)
    {
        var owners = db.Users.AsNoTracking();
        if (owner is not null)
        {
            var normalized = User.Normalize(owner);
            owners = owners.Where(u => u.NormalizedUsername == normalized);
        }
        return DescribeAsync(db.OAuthClients.AsNoTracking(), owners, cancellationToken);
    }

    private static async Task<ClientResponse[]> DescribeAsync(IQueryable<OAuthClient> clients, IQueryable<User> owners, CancellationToken cancellationToken)
    {
        var rows = await clients.Join(owners, c => c.OwnerId, u => u.Id, (c, u) => new { Client = c, Owner = u.Username })
            .OrderByDescending(x => x.Client.Id).ToListAsync(cancellationToken);
        return rows.Select(x => ClientResponse.From(x.Client, x.Owner)).ToArray();
    }

    private static async Task<Results<Ok<ClientResponse>, ProblemHttpResult>> GetAsync(
        string clientId, HttpContext http, PortcullisDb db, CancellationToken cancellationToken)
    {
        var found = await FindVisibleAsync(clientId, http, db, cancellationToken);
        return found is null ? NotFound(clientId) : TypedResults.Ok(ClientResponse.From(found.Value.Client, found.Value.Owner));
    }

    /// <summary>Deletes the client: its secret and every access token issued to it stop working at once, on every instance.</summary>
    private static async Task<Results<NoContent, ProblemHttpResult>> DeleteAsync(
        string clientId, HttpContext http, PortcullisDb db, AuditLog audit, InvalidationBus invalidation, CancellationToken cancellationToken) =>
        await DeleteClientAsync(clientId, http, db, audit, invalidation, cancellationToken) ? TypedResults.NoContent() : NotFound(clientId);

    /// <summary>Deletes a client the caller may see, audited, and tells every instance; false when there is none.</summary>
    internal static async Task<bool> DeleteClientAsync(
        string clientId, HttpContext http, PortcullisDb db, AuditLog audit, InvalidationBus invalidation, CancellationToken cancellationToken)
    {
        var found = await FindVisibleAsync(clientId, http, db, cancellationToken);
        if (found is null)
            return false;
        var (client, owner) = found.Value;
        await using (var tx = await db.Database.BeginTransactionAsync(cancellationToken))
        {
            if (await db.OAuthClients.Where(c => c.Id == client.Id).ExecuteDeleteAsync(cancellationToken) == 1)
            {
                db.AuditEvents.Add(audit.Create(http, AuditEvents.ClientDeleted, owner, client.OwnerId,
                    details: new { client_id = client.ClientId, name = client.Name, hint = client.SecretHint }));
                await db.SaveChangesAsync(cancellationToken);
            }
            await tx.CommitAsync(cancellationToken);
        }
        await invalidation.ClientChangedAsync(client.ClientId, cancellationToken);
        return true;
    }

    /// <summary>
    /// A new secret for the same client id. The old secret, and every access token issued with it,
    /// stop working at once. Of two concurrent rotations one wins; the other is a 409.
    /// </summary>
    private static async Task<Results<Ok<ClientSecretResponse>, ProblemHttpResult>> RotateSecretAsync(
        string clientId, HttpContext http, PortcullisDb db, TokenFormat format, AuditLog audit, InvalidationBus invalidation,
        TimeProvider time, CancellationToken cancellationToken)
    {
        var caller = http.Credential();
        var found = await FindVisibleAsync(clientId, http, db, cancellationToken);
        if (found is null)
            return NotFound(clientId);
        var (client, owner) = found.Value;
        // The new secret may not carry more than the caller could grant today.
        var scopes = ScopeSet.Parse(client.Scopes);
        if (!scopes.IsSubsetOf(caller.Effective))
            return ProblemResponses.BadRequest($"The client's scopes '{scopes}' exceed what this credential may grant; use a credential with '{scopes}'.");
        caller.ExerciseAll(scopes, http);

        var now = time.GetUtcNow().UtcDateTime;
        var secret = format.Generate(TokenKind.ClientSecret);
        var hash = TokenFormat.Digest(secret).ToHex();
        var hint = format.Hint(secret);
        var version = client.SecretVersion;
        await using (var tx = await db.Database.BeginTransactionAsync(cancellationToken))
        {
            var won = await db.OAuthClients.Where(c => c.Id == client.Id && c.SecretVersion == version)
                .ExecuteUpdateAsync(s => s
                    .SetProperty(c => c.SecretHash, hash)
                    .SetProperty(c => c.SecretHint, hint)
                    .SetProperty(c => c.SecretVersion, version + 1)
                    .SetProperty(c => c.SecretCreatedAt, now)
                    .SetProperty(c => c.SecretRevokedAt, (DateTime?)null), cancellationToken);
            if (won != 1)
            {
                await tx.RollbackAsync(cancellationToken);
                return ProblemResponses.Conflict($"The secret of client '{client.ClientId}' was changed by another request just now.");
            }
            db.AuditEvents.Add(audit.Create(http, AuditEvents.ClientSecretRotated, owner, client.OwnerId,
                details: new { client_id = client.ClientId, name = client.Name, hint = client.SecretHint, new_hint = hint }));
            await db.SaveChangesAsync(cancellationToken);
            await tx.CommitAsync(cancellationToken);
        }
        await invalidation.ClientChangedAsync(client.ClientId, cancellationToken);

        client.SecretHint = hint;
        client.SecretCreatedAt = now;
        http.Response.Headers.CacheControl = "no-store";
        http.Response.Headers.Pragma = "no-cache";
        return TypedResults.Ok(ClientSecretResponse.From(client, secret, owner));
    }

    /// <summary>A client the caller may see: their own, or anyone's for an admin. Others' clients are "not found".</summary>
    private static async Task<(OAuthClient Client, string Owner)?> FindVisibleAsync(
        string clientId, HttpContext http, PortcullisDb db, CancellationToken cancellationToken)
    {
        var caller = http.Credential();
        if (!ClientCache.IsWellFormed(clientId))
            return null;
        var row = await db.OAuthClients.AsNoTracking().Where(c => c.ClientId == clientId)
            .Join(db.Users, c => c.OwnerId, u => u.Id, (c, u) => new { Client = c, Owner = u.Username })
            .FirstOrDefaultAsync(cancellationToken);
        if (row is null || (row.Client.OwnerId != caller.Owner.Id && !caller.Exercise(ScopeRequirement.Admin, http)))
            return null;
        return (row.Client, row.Owner);
    }

    private static ProblemHttpResult NotFound(string clientId) =>
        ProblemResponses.NotFound($"There is no OAuth client '{(clientId.Length <= 64 ? clientId : clientId[..64] + "…")}' that you can see.");

    internal static string? ValidateName(string? name)
    {
        if (string.IsNullOrWhiteSpace(name))
            return "A client needs a name (1 to 100 characters), e.g. \"ci-deployer\".";
        if (name.Trim().Length > MaxNameLength)
            return $"A client name may have at most {MaxNameLength} characters.";
        if (name.Any(char.IsControl))
            return "A client name may not contain control characters.";
        return null;
    }
}
