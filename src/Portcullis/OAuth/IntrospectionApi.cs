using System.Globalization;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;
using Portcullis.Audit;
using Portcullis.OAuth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Auth;
using Portcullis.Tokens;

namespace Portcullis.OAuth;

/// <summary>
/// Token introspection (<c>POST /auth/introspect</c>, RFC 7662) and revocation (<c>POST /auth/revoke</c>,
/// RFC 7009) for API tokens, service tokens and JWTs. Both answer RFC 6749 error bodies.
/// </summary>
internal static class IntrospectionApi
{
    public static RouteGroupBuilder MapIntrospectionAndRevocation(this RouteGroupBuilder auth)
    {
        auth.MapPost("/introspect", IntrospectAsync).DisableAntiforgery().DescribedAsTokenParameterEndpoint();
        auth.MapPost("/revoke", RevokeAsync).DisableAntiforgery().DescribedAsTokenParameterEndpoint();
        auth.MapMethods("/introspect", ["GET", "PUT", "DELETE", "PATCH"], OAuthApi.MethodNotAllowed).ExcludeFromDescription();
        auth.MapMethods("/revoke", ["GET", "PUT", "DELETE", "PATCH"], OAuthApi.MethodNotAllowed).ExcludeFromDescription();
        return auth;
    }

    /// <summary>Exactly <c>{"active": false}</c>: nothing about why (RFC 7662 §2.2).</summary>
    private static readonly Dictionary<string, object> Inactive = new() { ["active"] = false };

    /// <summary>
    /// The caller is an admin credential (<c>Authorization: Bearer</c>) or an authenticated OAuth
    /// client (HTTP Basic or the body). Garbage, expired, revoked and unknown tokens are all just
    /// inactive. Introspecting a token is not a use of it: it is not counted in its usage.
    /// </summary>
    private static async Task<IResult> IntrospectAsync(
        HttpContext http, ClientAuthenticator clients, CredentialVerifier verifier, PortcullisDb db, PublicUrl url, IOptions<JwtOptions> jwt)
    {
        var cancellationToken = http.RequestAborted;
        var (parameters, parseError) = await TokenEndpoint.ReadParametersAsync(http.Request);
        if (parseError is not null)
            return TokenEndpoint.Error("invalid_request", parseError);

        if (IsBearer(http.Request))
        {
            if (parameters!.ContainsKey("client_id") || parameters.ContainsKey("client_secret"))
                return TokenEndpoint.Error("invalid_request", "Authenticate with a Bearer credential or with client credentials, not both.");
            if (http.Features.Get<Credential>() is not { } caller)
            {
                var failure = http.Items[CredentialAuthenticationHandler.FailureKey] as AuthFailure;
                if (failure == AuthFailure.Unavailable)
                    return Unavailable(http);
                if (failure is { IsRefusal: true })
                    return new AuthFailureResult(failure);
                if (failure?.Error == "invalid_request")
                    return TokenEndpoint.Error("invalid_request", failure.Description);
                http.Response.Headers.WWWAuthenticate = $"Bearer realm=\"{CredentialAuthenticationHandler.Realm}\", error=\"invalid_token\"";
                return TokenEndpoint.Error("invalid_token", failure?.Description ?? "The credential is invalid.", StatusCodes.Status401Unauthorized);
            }
            if (!caller.Exercise(ScopeRequirement.Admin, http))
            {
                http.Response.Headers.WWWAuthenticate =
                    $"Bearer realm=\"{CredentialAuthenticationHandler.Realm}\", error=\"insufficient_scope\", scope=\"{Scopes.Admin}\"";
                return TokenEndpoint.Error("insufficient_scope",
                    "Introspection needs an admin credential or OAuth client authentication.", StatusCodes.Status403Forbidden);
            }
        }
        else
        {
            var client = await clients.AuthenticateAsync(http, parameters!, "introspect", cancellationToken);
            if (client.Error is { } error)
                return error;
            if (client.Client is null)
            {
                http.Response.Headers.WWWAuthenticate = new StringValues([$"Bearer realm=\"{CredentialAuthenticationHandler.Realm}\"", ClientAuthenticator.BasicChallenge]);
                return TokenEndpoint.Error("invalid_client",
                    "Introspection needs an admin credential (Authorization: Bearer) or OAuth client authentication (HTTP Basic, or client_id and client_secret in the body).",
                    StatusCodes.Status401Unauthorized);
            }
        }

        if (parameters!.GetValueOrDefault("token") is not { } token)
            return TokenEndpoint.Error("invalid_request", "Send the token to inspect as the 'token' parameter.");
        // token_type_hint is only a hint (RFC 7662 §2.1): every kind of token is looked for regardless.
        if (token.Length > 8192 || token.AsSpan().IndexOfAny(' ', '\t') >= 0)
            return TypedResults.Json(Inactive);
        var result = await verifier.InspectAsync(token, cancellationToken);
        if (result.Failure == VerifyFailure.Unavailable)
            return Unavailable(http);
        if (result.Credential is not { } credential)
            return TypedResults.Json(Inactive);

        var answer = new Dictionary<string, object>
        {
            ["active"] = true,
            ["scope"] = credential.Effective.ToString(),
            ["token_type"] = "Bearer",
            ["username"] = credential.Owner.Name,
            ["iss"] = url.Value,
        };
        if (credential.Jwt is { } claims)
        {
            if (claims.ClientId is not null)
                answer["client_id"] = claims.ClientId;
            answer["sub"] = claims.Subject;
            answer["aud"] = jwt.Value.Audience;
            answer["jti"] = claims.Jti;
            answer["iat"] = Unix(claims.IssuedAt);
            answer["exp"] = Unix(claims.ExpiresAt);
            if (claims.NotBefore is { } nbf)
                answer["nbf"] = Unix(nbf);
            return TypedResults.Json(answer);
        }

        // API and service tokens: the owner is the subject, the token id the identifier.
        answer["sub"] = credential.Owner.Name;
        if (credential.TokenId is { } tokenId && long.TryParse(tokenId, NumberStyles.None, CultureInfo.InvariantCulture, out var id))
        {
            answer["jti"] = tokenId;
            var times = await db.ApiTokens.AsNoTracking().Where(t => t.Id == id)
                .Select(t => new { t.CreatedAt, t.ExpiresAt, t.RevokedAt, t.AllowedCidrs, t.RatePerSecond, t.RatePerMinute }).FirstOrDefaultAsync(cancellationToken);
            if (times is not null)
            {
                answer["iat"] = Unix(times.CreatedAt);
                // During a rotation's grace period the token ends when the grace period does.
                var ends = times.RevokedAt is { } r && (times.ExpiresAt is null || r < times.ExpiresAt) ? r : times.ExpiresAt;
                if (ends is { } exp)
                    answer["exp"] = Unix(exp);
                // Where it may be used from: a resource server checking tokens itself enforces it (docs/token-policies.md).
                if (AllowedSources.ToNames(times.AllowedCidrs) is { } ranges)
                    answer["allowed_cidrs"] = ranges;
                if (times.RatePerSecond is not null || times.RatePerMinute is not null)
                    answer["rate_limit"] = new TokenRateLimit(times.RatePerSecond, times.RatePerMinute);
            }
        }
        return TypedResults.Json(answer);
    }

    /// <summary>
    /// Revokes an API token, a service token, a JWT or a client secret. Possession is the
    /// authorization, as with GitHub's credential revocation API: whoever holds a token may kill it,
    /// and needs no other credential. Unknown, invalid and already revoked tokens get the same 200
    /// (RFC 7009 §2.2); <c>token_type_hint</c> is ignored, so a wrong hint still revokes.
    /// </summary>
    private static async Task<IResult> RevokeAsync(
        HttpContext http, ClientAuthenticator clients, TokenFormat format, CredentialVerifier verifier, JwtService jwts,
        PortcullisDb db, InvalidationBus invalidation, AuditLog audit, TimeProvider time)
    {
        var cancellationToken = http.RequestAborted;
        var (parameters, parseError) = await TokenEndpoint.ReadParametersAsync(http.Request);
        if (parseError is not null)
            return TokenEndpoint.Error("invalid_request", parseError);
        // A public client names itself with client_id alone (RFC 7009 §2.1); that is not an authentication attempt.
        if (parameters!.ContainsKey("client_id") && !parameters.ContainsKey("client_secret") && !IsBasic(http.Request))
            parameters.Remove("client_id");
        // Client credentials are optional here, but if sent they must be right.
        var client = await clients.AuthenticateAsync(http, parameters, "revoke", cancellationToken);
        if (client.Error is { } error)
            return error;
        if (parameters.GetValueOrDefault("token") is not { } token)
            return TokenEndpoint.Error("invalid_request", "Send the token to revoke as the 'token' parameter.");

        const string via = "revocation_endpoint";
        var byClient = client.Client?.ClientId;
        var now = time.GetUtcNow().UtcDateTime;
        if (JwtService.LooksLikeJwt(token) && !format.HasPrefix(token))
        {
            // Only a JWT we signed, and that has not expired, is worth a deny-list entry.
            if (await jwts.ValidateAsync(token, cancellationToken) is { } claims)
            {
                await using var tx = await db.Database.BeginTransactionAsync(cancellationToken);
                if (await RevokedJwts.InsertAsync(db, claims.Jti, claims.ExpiresAt, claims.Subject, now, cancellationToken))
                {
                    db.AuditEvents.Add(audit.Create(http, AuditEvents.TokenRevoked, claims.Subject, claims.PrincipalId, claims.Jti,
                        new { kind = "jwt", via, by_client = byClient, client_id = claims.ClientId, expires_at = claims.ExpiresAt }));
                    await db.SaveChangesAsync(cancellationToken);
                }
                await tx.CommitAsync(cancellationToken);
                await invalidation.JwtRevokedAsync(claims.Jti, claims.ExpiresAt, cancellationToken);
            }
            return TypedResults.Ok();
        }

        var isPortcullisToken = format.TryRead(token, out var kind);
        // Not in our format: only a configured service's pre-shared token can still match.
        if (!isPortcullisToken && !(verifier.AcceptsPresharedTokens && token.Length is >= 32 and <= 8192))
            return TypedResults.Ok();
        var hash = TokenFormat.Digest(token).ToHex();
        if (isPortcullisToken && kind == TokenKind.ClientSecret)
        {
            var row = await db.OAuthClients.AsNoTracking().Where(c => c.SecretHash == hash)
                .Join(db.Users, c => c.OwnerId, u => u.Id, (c, u) => new { c.Id, c.ClientId, c.OwnerId, c.Name, c.SecretHint, Owner = u.Username })
                .FirstOrDefaultAsync(cancellationToken);
            if (row is null)
                return TypedResults.Ok();
            await using var tx = await db.Database.BeginTransactionAsync(cancellationToken);
            var changed = await db.OAuthClients.Where(c => c.Id == row.Id && c.SecretHash == hash && c.SecretRevokedAt == null)
                .ExecuteUpdateAsync(s => s.SetProperty(c => c.SecretRevokedAt, now).SetProperty(c => c.SecretVersion, c => c.SecretVersion + 1), cancellationToken);
            if (changed == 1)
            {
                db.AuditEvents.Add(audit.Create(http, AuditEvents.ClientSecretRevoked, row.Owner, row.OwnerId,
                    details: new { client_id = row.ClientId, name = row.Name, hint = row.SecretHint, via, by_client = byClient }));
                await db.SaveChangesAsync(cancellationToken);
            }
            await tx.CommitAsync(cancellationToken);
            await invalidation.ClientChangedAsync(row.ClientId, cancellationToken);
            return TypedResults.Ok();
        }

        var apiToken = await db.ApiTokens.AsNoTracking().Where(t => t.TokenHash == hash)
            .Join(db.Users, t => t.OwnerId, u => u.Id, (t, u) => new { t.Id, t.OwnerId, t.Name, t.Hint, Owner = u.Username })
            .FirstOrDefaultAsync(cancellationToken);
        if (apiToken is null)
            return TypedResults.Ok();
        await using (var tx = await db.Database.BeginTransactionAsync(cancellationToken))
        {
            // Also ends a rotation's grace period at once: revoked now is revoked now.
            var changed = await db.ApiTokens.Where(t => t.Id == apiToken.Id && (t.RevokedAt == null || t.RevokedAt > now))
                .ExecuteUpdateAsync(s => s.SetProperty(t => t.RevokedAt, now), cancellationToken);
            if (changed == 1)
                db.AuditEvents.Add(audit.Create(http, AuditEvents.TokenRevoked, apiToken.Owner, apiToken.OwnerId,
                    apiToken.Id.ToString(CultureInfo.InvariantCulture), new { name = apiToken.Name, hint = apiToken.Hint, via, by_client = byClient }));
            // Found where it should not be (portcullis scan --revoke): news for its owner even when it was revoked already.
            if (parameters.GetValueOrDefault("reason") == "leaked")
                db.AuditEvents.Add(audit.Create(http, AuditEvents.TokenLeaked, apiToken.Owner, apiToken.OwnerId,
                    apiToken.Id.ToString(CultureInfo.InvariantCulture), new { name = apiToken.Name, hint = apiToken.Hint, revoked_now = changed == 1 }));
            await db.SaveChangesAsync(cancellationToken);
            await tx.CommitAsync(cancellationToken);
        }
        await invalidation.TokenChangedAsync(hash, cancellationToken);
        return TypedResults.Ok();
    }

    private static bool IsBearer(HttpRequest request) =>
        request.Headers.Authorization is { Count: > 0 } headers && (headers.Count > 1 || Scheme(headers[0]) is var scheme
            && (scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase) || scheme.Equals("token", StringComparison.OrdinalIgnoreCase)));

    private static bool IsBasic(HttpRequest request) =>
        request.Headers.Authorization is { Count: 1 } headers && Scheme(headers[0]).Equals("Basic", StringComparison.OrdinalIgnoreCase);

    private static string Scheme(string? header) => header is null ? "" : header.IndexOf(' ') is var space and >= 0 ? header[..space] : header;

    private static long Unix(DateTime utc) => new DateTimeOffset(DateTime.SpecifyKind(utc, DateTimeKind.Utc)).ToUnixTimeSeconds();

    private static IResult Unavailable(HttpContext http)
    {
        http.Response.Headers.RetryAfter = "5";
        return TokenEndpoint.Error("temporarily_unavailable", "The database does not answer. Try again shortly.", StatusCodes.Status503ServiceUnavailable);
    }
}
