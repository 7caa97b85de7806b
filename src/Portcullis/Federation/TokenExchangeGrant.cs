using Microsoft.EntityFrameworkCore;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.OAuth;
using Portcullis.Security;
using Portcullis.Users;

namespace Portcullis.Federation;

/// <summary>A subject token already traded, remembered until it expires so that it is traded once, on any instance.</summary>
internal sealed class ExchangedSubjectToken
{
    /// <summary>SHA-256 (hex) of the issuer and the token's <c>jti</c>, or of the whole token.</summary>
    public required string ReplayKey { get; init; }
    public DateTime ExpiresAt { get; init; }
}

/// <summary>
/// <c>grant_type=urn:ietf:params:oauth:grant-type:token-exchange</c> at <c>/auth/token</c> (RFC 8693; docs/trusted-issuers.md):
/// a token signed by a trusted issuer (a CI job's OIDC token) is traded for a short-lived access token of the principal
/// its first matching rule names. The access token is an ordinary Portcullis JWT of that principal: disabling, deleting or
/// changing the principal's password ends it, as it ends the principal's other JWTs.
/// </summary>
internal sealed partial class TokenExchangeGrant(
    TrustedIssuers issuers, JwtService jwts, AuditLog audit, IDbContextFactory<PortcullisDb> dbs, TimeProvider time, ILogger<TokenExchangeGrant> logger)
{
    public const string GrantType = "urn:ietf:params:oauth:grant-type:token-exchange";
    public const string JwtTokenType = "urn:ietf:params:oauth:token-type:jwt";
    public const string IdTokenType = "urn:ietf:params:oauth:token-type:id_token";
    public const string AccessTokenType = "urn:ietf:params:oauth:token-type:access_token";

    /// <summary>The <c>client_id</c> of an exchanged token: the trusted issuer it came through (never a registered client's, which start with <c>client-</c>).</summary>
    public static string ClientIdOf(TrustedIssuer issuer) => "issuer:" + issuer.Name;

    public async Task<IResult> HandleAsync(HttpContext http, IReadOnlyDictionary<string, string> p, PortcullisDb db)
    {
        if (!issuers.Any)
            return TokenEndpoint.Error("unsupported_grant_type", "This server trusts no issuers, so it exchanges no tokens. An administrator configures them under Auth:TrustedIssuers.");
        if (p.GetValueOrDefault("subject_token") is not { } subjectToken || p.GetValueOrDefault("subject_token_type") is not { } subjectType)
            return TokenEndpoint.Error("invalid_request", $"The token exchange needs 'subject_token' (the provider's JWT) and 'subject_token_type' ('{JwtTokenType}').");
        if (subjectType is not (JwtTokenType or IdTokenType))
            return TokenEndpoint.Error("invalid_request", $"The subject_token_type must be '{JwtTokenType}': this server exchanges signed JWTs of its trusted issuers.");
        if (p.ContainsKey("actor_token") || p.ContainsKey("actor_token_type"))
            return TokenEndpoint.Error("invalid_request", "Delegation ('actor_token') is not supported: the exchanged token acts as the principal its rule names.");
        if (p.GetValueOrDefault("requested_token_type") is { } requested && requested is not (AccessTokenType or JwtTokenType))
            return TokenEndpoint.Error("invalid_request", $"Only access tokens are issued: leave out requested_token_type or set it to '{AccessTokenType}'.");
        ScopeSet? narrowed = null;
        if (p.GetValueOrDefault("scope") is { } scope)
        {
            if (!ScopeSet.TryParse(scope.Split(' ', StringSplitOptions.RemoveEmptyEntries), out var parsed, out var scopeError))
                return TokenEndpoint.Error("invalid_scope", scopeError!);
            narrowed = parsed;
        }

        var (external, refusal) = await issuers.ValidateAsync(subjectToken, http.RequestAborted);
        if (refusal is not null)
        {
            await RefuseAsync(http, refusal.Issuer, null, refusal.Reason);
            return refusal.IssuerUnreachable
                ? TokenEndpoint.Error("temporarily_unavailable", refusal.Reason, StatusCodes.Status503ServiceUnavailable)
                : TokenEndpoint.Error("invalid_grant", refusal.Reason);
        }
        var issuer = external!.Issuer;
        var (rule, mismatch) = issuer.Match(external.Claims);
        if (rule is null)
            return await InvalidGrantAsync(http, external, $"No rule of '{issuer.Name}' matches this token: {mismatch}.");

        var actAs = User.Normalize(rule.ActAs);
        var principal = await db.Users.AsNoTracking().FirstOrDefaultAsync(u => u.NormalizedUsername == actAs, http.RequestAborted);
        if (principal is null || principal.IsDisabled)
            return await InvalidGrantAsync(http, external, $"Rule '{rule.Name}' acts as '{rule.ActAs}', which does not exist or is disabled.", rule);
        var rights = PrincipalCache.ToState(principal, 0).Rights;
        var scopes = rule.Scopes.Intersect(rights);
        if (narrowed is not null)
        {
            if (!narrowed.IsSubsetOf(scopes))
                return TokenEndpoint.Error("invalid_scope", $"The requested scope '{narrowed}' exceeds what rule '{rule.Name}' gives: '{scopes}'.");
            scopes = narrowed;
        }
        if (scopes.IsEmpty)
            return await InvalidGrantAsync(http, external, $"Rule '{rule.Name}' gives '{rule.Scopes}', none of which '{rule.ActAs}' holds.", rule);

        var issued = jwts.Issue(principal.Username, scopes, rule.Lifetime, principal.Id, principal.CredentialVersion, ClientIdOf(issuer));
        // The mark that the subject token is used and the audit event commit together: of two instances given the same
        // token at once, the primary key lets exactly one of them succeed.
        db.ExchangedSubjectTokens.Add(new ExchangedSubjectToken { ReplayKey = external.ReplayKey, ExpiresAt = external.ExpiresAt });
        db.AuditEvents.Add(audit.Create(http, AuditEvents.TokenExchanged, principal.Username, principal.Id, issued.Jti, new
        {
            issuer = issuer.Name, external_subject = external.Subject, rule = rule.Name, scopes = scopes.ToString(), lifetime_seconds = issued.ExpiresIn,
        }));
        try
        {
            await db.SaveChangesAsync(http.RequestAborted);
        }
        catch (DbUpdateException e) when (DatabaseFailures.IsUniqueViolation(e))
        {
            db.ChangeTracker.Clear();
            return await InvalidGrantAsync(http, external, "This subject_token was exchanged already; each is traded once. Ask the provider for a fresh one.", rule);
        }
        Log.Exchanged(logger, issuer.Name, rule.Name, principal.Username, issued.Jti);
        return TypedResults.Json(new TokenEndpointResponse(issued.AccessToken, "Bearer", issued.ExpiresIn, issued.Scopes.ToString(), AccessTokenType));
    }

    private async Task<IResult> InvalidGrantAsync(HttpContext http, ExternalToken external, string reason, ExchangeRule? rule = null)
    {
        await RefuseAsync(http, external.Issuer, external, reason, rule);
        return TokenEndpoint.Error("invalid_grant", reason);
    }

    /// <summary>Audits a refused exchange; what the token says is recorded only when its signature proved who wrote it.</summary>
    private async Task RefuseAsync(HttpContext http, TrustedIssuer? issuer, ExternalToken? external, string reason, ExchangeRule? rule = null)
    {
        await audit.EnqueueAsync(audit.Create(http, AuditEvents.TokenExchangeRefused, rule?.ActAs, details: new
        {
            issuer = issuer?.Name, external_subject = external?.Subject, rule = rule?.Name, reason,
        }), http.RequestAborted);
    }

    /// <summary>Forgets subject tokens that have expired: they can no longer be traded anyway.</summary>
    public async Task PruneAsync(CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcDateTime;
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        await db.ExchangedSubjectTokens.Where(t => t.ExpiresAt < now).ExecuteDeleteAsync(cancellationToken);
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Exchanged a token of {Issuer} by rule {Rule} for an access token of {Principal} (jti {Jti})")]
        public static partial void Exchanged(ILogger logger, string issuer, string rule, string principal, string jti);
    }
}
