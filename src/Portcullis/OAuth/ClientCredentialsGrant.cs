using Microsoft.Extensions.Options;
using Portcullis.Audit;
using Portcullis.OAuth;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Auth;

namespace Portcullis.OAuth;

/// <summary>
/// <c>grant_type=client_credentials</c> at <c>/auth/token</c> (RFC 6749 §4.4): an OAuth client trades
/// its id and secret (HTTP Basic or the body) for an access token. <c>sub</c> and <c>client_id</c> are
/// the client id; the token acts for the client's owner with the client's scopes, intersected with
/// what the owner holds right now. There is no refresh token: the client simply asks again.
/// </summary>
internal sealed partial class ClientCredentialsGrant(ClientAuthenticator authenticator, JwtService jwts, AuditLog audit, IOptions<JwtOptions> options, ILogger<ClientCredentialsGrant> logger)
{
    public const string GrantType = "client_credentials";

    public async Task<IResult> HandleAsync(HttpContext http, IReadOnlyDictionary<string, string> parameters)
    {
        var authentication = await authenticator.AuthenticateAsync(http, parameters, GrantType, http.RequestAborted);
        if (authentication.Error is { } error)
            return error;
        if (authentication is not { Client: { } client, Owner: { } owner })
        {
            http.Response.Headers.WWWAuthenticate = ClientAuthenticator.BasicChallenge;
            return TokenEndpoint.Error("invalid_client",
                "The client_credentials grant needs client authentication: HTTP Basic with client_id and client_secret, or both in the body.",
                StatusCodes.Status401Unauthorized);
        }

        var scopes = client.Scopes;
        if (parameters.GetValueOrDefault("scope") is { } scope)
        {
            if (!ScopeSet.TryParse(scope.Split(' ', StringSplitOptions.RemoveEmptyEntries), out var requested, out var scopeError))
                return TokenEndpoint.Error("invalid_scope", scopeError!);
            if (!requested.IsSubsetOf(client.Scopes))
                return TokenEndpoint.Error("invalid_scope", $"The requested scope '{requested}' exceeds the client's scopes: '{client.Scopes}'.");
            scopes = requested;
        }
        // The owner may have lost rights since the client was created (docs/decisions.md): the token never exceeds them.
        scopes = scopes.Intersect(owner.Rights);
        if (scopes.IsEmpty)
            return TokenEndpoint.Error("invalid_scope", $"The client's owner '{owner.Name}' no longer holds any of the scopes asked for.");

        // Client tokens always get the access-token lifetime, on /auth/token/cli too: a client can
        // ask again at any moment, so a long-lived token would only outlive a secret rotation.
        var issued = jwts.Issue(client.ClientId, scopes, options.Value.AccessTokenLifetime, owner.Id, client.SecretVersion, client.ClientId, owner.CredentialVersion);
        // Queued rather than written with the request: issuing tokens to machines must not wait for the database
        // (only for room in the queue, when the writer falls behind: an issued token is never left unaudited).
        await audit.EnqueueAsync(audit.Create(http, AuditEvents.LoginSucceeded, owner.Name, owner.Id, issued.Jti,
            new { path = GrantType, client_id = client.ClientId, lifetime_seconds = issued.ExpiresIn }), http.RequestAborted);
        Log.Issued(logger, client.ClientId, issued.Jti);
        return TypedResults.Json(new TokenEndpointResponse(issued.AccessToken, "Bearer", issued.ExpiresIn, issued.Scopes.ToString()));
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Debug, "Issued an access token to client {ClientId} (jti {Jti})")]
        public static partial void Issued(ILogger logger, string clientId, string jti);
    }
}
