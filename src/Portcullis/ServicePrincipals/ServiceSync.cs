using System.Data.Common;
using System.Globalization;
using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Gateway;
using Portcullis.Security;
using Portcullis.Users;

namespace Portcullis.ServicePrincipals;

/// <summary>
/// At start, makes the database agree with <c>Services</c>: each configured service is a principal
/// (kind <c>service</c>) with its scopes, and its token is an API token of that principal stored as
/// SHA-256 (a configured <c>api_token</c> as given, or a fresh <c>pcs_</c> token for a managed service
/// without one). Tokens of services no longer configured, and superseded tokens, are revoked.
/// </summary>
internal sealed class ServiceSync(IOptions<ServicesOptions> options, TokenFormat format, ServiceRegistry registry,
    AuditLog audit, TimeProvider time, ILogger<ServiceSync> logger)
{
    public const string ConfiguredTokenName = "configured";
    public const string GeneratedTokenName = "generated";

    /// <summary>The token each managed service gets in its environment, by service name (plaintext, in memory only).</summary>
    public IReadOnlyDictionary<string, string> ProcessTokens => _processTokens;

    private readonly Dictionary<string, string> _processTokens = new(StringComparer.Ordinal);

    public async Task RunAsync(DbConnection connection, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcDateTime;
        var configured = options.Value.Services;
        foreach (var service in configured)
        {
            var name = service.Name!;
            // Users and services share one name space: a service never takes over a person's account.
            var existing = await ReadPrincipalAsync(connection, name, cancellationToken);
            if (existing is { Kind: not PrincipalKind.Service })
                throw new StartupException($"Services: the service name '{name}' is already a user's name. Rename the service.");
            long id;
            if (existing is null)
            {
                await Sql.ExecuteAsync(connection,
                    "INSERT INTO users (username, normalized_username, kind, is_admin, is_disabled, scopes, credential_version, created_at, updated_at) " +
                    "VALUES (@n, @n, 'service', @admin, @off, @scopes, 1, @now, @now)", cancellationToken,
                    ("@n", name), ("@admin", service.Admin), ("@off", false), ("@scopes", service.EffectiveScopes.ToString()), ("@now", now));
                id = (await ReadPrincipalAsync(connection, name, cancellationToken))!.Id;
                await AuditAsync(connection, AuditEvents.ServiceRegistered, name, id, null, new { source = "configuration" }, cancellationToken);
            }
            else
            {
                id = existing.Id;
                await Sql.ExecuteAsync(connection,
                    "UPDATE users SET is_admin = @admin, is_disabled = @off, scopes = @scopes, updated_at = @now WHERE id = @id", cancellationToken,
                    ("@admin", service.Admin), ("@off", false), ("@scopes", service.EffectiveScopes.ToString()), ("@now", now), ("@id", id));
            }

            var scopes = service.EffectiveScopes.ToString();
            if (service.ApiToken is { } token)
            {
                var hash = TokenFormat.Digest(token).ToHex();
                // A token changed in the configuration replaces the old one, which stops working.
                await RevokeAsync(connection, id, name, "name = @kind AND token_hash <> @hash", cancellationToken, ("@kind", ConfiguredTokenName), ("@hash", hash));
                var row = await Sql.ScalarAsync(connection, "SELECT revoked_at FROM api_tokens WHERE token_hash = @hash", cancellationToken, ("@hash", hash));
                if (row is null && await Sql.ScalarAsync(connection, "SELECT id FROM api_tokens WHERE token_hash = @hash", cancellationToken, ("@hash", hash)) is null)
                {
                    await InsertTokenAsync(connection, id, ConfiguredTokenName, hash, Hint(token), scopes, now, cancellationToken);
                    // As JupyterHub says it: the operator sees that a new or changed token in the configuration took (never the token).
                    logger.LogInformation("Adding API token for service {Service}", name);
                }
                else if (row is not null)
                {
                    logger.LogWarning("The configured token of service {Service} was revoked through the API; it stays revoked. Configure a new one.", name);
                }
                else
                {
                    await Sql.ExecuteAsync(connection, "UPDATE api_tokens SET scopes = @scopes WHERE token_hash = @hash", cancellationToken, ("@scopes", scopes), ("@hash", hash));
                }
                if (service.Command is not null)
                    _processTokens[name] = token;
            }
            else
            {
                await RevokeAsync(connection, id, name, "name = @kind", cancellationToken, ("@kind", ConfiguredTokenName));
            }
            // A managed service without a configured token gets a new one at every start; the previous one ends.
            await RevokeAsync(connection, id, name, "name = @kind", cancellationToken, ("@kind", GeneratedTokenName));
            if (service.ApiToken is null && service.Command is not null)
            {
                var generated = format.Generate(TokenKind.Service);
                await InsertTokenAsync(connection, id, GeneratedTokenName, TokenFormat.Digest(generated).ToHex(), format.Hint(generated), scopes, now, cancellationToken);
                _processTokens[name] = generated;
            }
        }

        // Services gone from the configuration: their tokens end, their principal is disabled.
        var names = configured.Select(s => s.Name!).ToHashSet(StringComparer.Ordinal);
        await using (var cmd = Sql.Command(connection, "SELECT id, username FROM users WHERE kind = 'service' AND is_disabled = @off", ("@off", false)))
        {
            var gone = new List<(long Id, string Name)>();
            await using (var reader = await cmd.ExecuteReaderAsync(cancellationToken))
            {
                while (await reader.ReadAsync(cancellationToken))
                {
                    if (!names.Contains(reader.GetString(1)))
                        gone.Add((reader.GetInt64(0), reader.GetString(1)));
                }
            }
            foreach (var (id, name) in gone)
            {
                await RevokeAsync(connection, id, name, "1 = 1", cancellationToken);
                await Sql.ExecuteAsync(connection, "UPDATE users SET is_disabled = @on, credential_version = credential_version + 1, updated_at = @now WHERE id = @id",
                    cancellationToken, ("@on", true), ("@now", now), ("@id", id));
                await AuditAsync(connection, AuditEvents.ServiceRemoved, name, id, null, new { source = "configuration" }, cancellationToken);
                logger.LogInformation("Service {Service} is no longer configured: its tokens are revoked", name);
            }
        }

        // Services with a url are reachable through the gateway at /services/<name>/.
        registry.SetSource("services", configured.Where(s => s.Url is not null).Select((s, i) =>
            new ServiceEntry(s.Name!, "service", [new Uri(s.Url!)], Protected: true, $"Service {s.Name}", "services", now.AddTicks(i))));
    }

    private static string Hint(string token) => token.Length <= 8 ? "…" : string.Concat(token.AsSpan(0, 4), "…");

    private sealed record Principal(long Id, string Kind);

    private static async Task<Principal?> ReadPrincipalAsync(DbConnection connection, string name, CancellationToken cancellationToken)
    {
        await using var cmd = Sql.Command(connection, "SELECT id, kind FROM users WHERE normalized_username = @n", ("@n", name));
        await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? new Principal(reader.GetInt64(0), reader.GetString(1)) : null;
    }

    private static Task InsertTokenAsync(DbConnection connection, long ownerId, string name, string hash, string hint, string scopes, DateTime now, CancellationToken cancellationToken) =>
        Sql.ExecuteAsync(connection,
            "INSERT INTO api_tokens (owner_id, name, description, token_hash, hint, scopes, created_at, created_by) VALUES (@o, @name, @d, @hash, @hint, @scopes, @now, 'configuration')",
            cancellationToken, ("@o", ownerId), ("@name", name), ("@d", name == GeneratedTokenName ? "Generated at start for the managed process" : "From the Services configuration"),
            ("@hash", hash), ("@hint", hint), ("@scopes", scopes), ("@now", now));

    private async Task RevokeAsync(DbConnection connection, long ownerId, string service, string where, CancellationToken cancellationToken, params (string, object?)[] parameters)
    {
        var now = time.GetUtcNow().UtcDateTime;
        var revoked = await Sql.ExecuteAsync(connection, $"UPDATE api_tokens SET revoked_at = @now WHERE owner_id = @o AND revoked_at IS NULL AND {where}",
            cancellationToken, [("@now", now), ("@o", ownerId), .. parameters]);
        if (revoked > 0)
            await AuditAsync(connection, AuditEvents.TokenRevoked, service, ownerId, null, new { reason = "services configuration", count = revoked }, cancellationToken);
    }

    private async Task AuditAsync(DbConnection connection, string name, string subject, long subjectId, string? tokenId, object details, CancellationToken cancellationToken)
    {
        var e = audit.Create(null, name, subject, subjectId, tokenId, details);
        e.Actor = "configuration";
        await Sql.ExecuteAsync(connection,
            "INSERT INTO audit_events (occurred_at, event, actor, subject, subject_id, token_id, details) VALUES (@at, @event, @actor, @subject, @sid, @tid, @details)",
            cancellationToken, ("@at", e.OccurredAt), ("@event", e.Event), ("@actor", e.Actor), ("@subject", e.Subject), ("@sid", e.SubjectId), ("@tid", e.TokenId), ("@details", e.Details));
    }
}
