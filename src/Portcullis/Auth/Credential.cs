using System.Globalization;
using System.Net;
using Portcullis.Security;
using Portcullis.OAuth;
using Portcullis.Tokens;

namespace Portcullis.Auth;

/// <summary>What a principal may do right now, as last read from the database.</summary>
internal sealed class PrincipalState(long id, string name, string kind, bool isAdmin, bool isDisabled, ScopeSet rights, int credentialVersion, long loadedAtTicks)
{
    public long Id { get; } = id;
    public string Name { get; } = name;
    public string Kind { get; } = kind;
    public bool IsAdmin { get; } = isAdmin;
    public bool IsDisabled { get; } = isDisabled;

    /// <summary>The owner's current rights; a credential never exceeds them (docs/decisions.md).</summary>
    public ScopeSet Rights { get; } = rights;

    public int CredentialVersion { get; } = credentialVersion;
    public long LoadedAtTicks { get; } = loadedAtTicks;

    public bool IsService => Kind == Users.PrincipalKind.Service;
}

internal static class CredentialKinds
{
    public const string ApiToken = "api_token";
    public const string Jwt = "jwt";
    public const string Session = "session";
    public const string Service = "service";
}

/// <summary>An authenticated credential on a request: who it belongs to and what it was granted.</summary>
internal sealed class Credential(string kind, string? tokenId, PrincipalState owner, ScopeSet granted, string? clientId = null, JwtClaims? jwt = null)
{
    /// <summary>One of <see cref="CredentialKinds"/>.</summary>
    public string Kind { get; } = kind;

    /// <summary>The API token id (decimal) or the JWT's <c>jti</c>.</summary>
    public string? TokenId { get; } = tokenId;

    public PrincipalState Owner { get; } = owner;

    /// <summary>The scopes the credential was minted with.</summary>
    public ScopeSet Granted { get; } = granted;

    public string? ClientId { get; } = clientId;

    /// <summary>The validated claims when the credential is a JWT (introspection reports them).</summary>
    public JwtClaims? Jwt { get; } = jwt;

    /// <summary>The ranges an API token is limited to (docs/token-policies.md); null when it is not limited.</summary>
    public IPNetwork[]? AllowedNetworks { get; init; }

    /// <summary>An API token's rate limits (docs/token-policies.md); null when it has none.</summary>
    public TokenRateLimit? RateLimit { get; init; }

    /// <summary>
    /// A token fenced in by where or how fast it may be used: what it creates must be fenced as well, so it may make
    /// API tokens (which take its limits) but no other credential (docs/token-policies.md).
    /// </summary>
    public bool IsFenced => AllowedNetworks is not null || RateLimit is not null;

    /// <summary>
    /// An OAuth client's own token (client credentials: <c>sub</c> is the client). It may not create or change
    /// credentials, which would outlive it (docs/decisions.md, "What an OAuth client may do").
    /// </summary>
    public bool IsClientCredentials => Kind == CredentialKinds.Jwt && ThroughOAuthClient && Jwt?.Subject == ClientId;

    /// <summary>Issued to a registered OAuth client (its own token, or a person's password login through it), not to Portcullis itself.</summary>
    public bool ThroughOAuthClient => ClientId is not null && !FirstPartyClients.Contains(ClientId);

    /// <summary>Granted scopes intersected with the owner's current rights.</summary>
    public ScopeSet Effective => Granted.Intersect(Owner.Rights);

    public bool Allows(ScopeRequirement requirement) => Granted.Allows(requirement) && Owner.Rights.Allows(requirement);
}

/// <summary>Endpoints that create or change credentials, refused to credentials whose limits what they made would not carry.</summary>
internal static class ClientCredentialRules
{
    public const string Reason =
        "An OAuth client's access token cannot create or change credentials (tokens, client secrets, passwords, users, signing keys): " +
        "they would outlive the client. Use a person's or a service's API token for this.";

    public const string FencedReason =
        "This token is limited to addresses or a rate (allowed_cidrs, rate_limit), and OAuth clients, client secrets, users and passwords " +
        "could not carry those limits. Use a credential without them for this.";

    /// <summary>
    /// Refuses the endpoint (403) to an OAuth client's own token: anything it created could outlive the client
    /// and its secret (docs/decisions.md, "What an OAuth client may do").
    /// </summary>
    public static TBuilder NotForClientCredentials<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder =>
        builder.RefusedTo(c => c.IsClientCredentials, Reason);

    /// <summary>
    /// Refuses the endpoint (403) to a token with address or rate limits: the credential it would create or change (a
    /// client secret, a password) could be used from anywhere, at any rate (docs/token-policies.md).
    /// </summary>
    public static TBuilder NotForFencedTokens<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder =>
        builder.RefusedTo(c => c.IsFenced, FencedReason);

    private static TBuilder RefusedTo<TBuilder>(this TBuilder builder, Func<Credential, bool> refused, string reason) where TBuilder : IEndpointConventionBuilder =>
        builder.AddEndpointFilter(async (context, next) =>
            context.HttpContext.Features.Get<Credential>() is { } credential && refused(credential)
                ? ProblemResponses.Forbidden(reason)
                : await next(context));
}

/// <summary>The scopes a token's requests rely on, noted for narrowing it (docs/token-policies.md, "Narrowing").</summary>
internal static class ScopeUses
{
    /// <summary>
    /// Whether the credential allows <paramref name="requirement"/>; when it does and is an API or service token, notes
    /// that the token used that scope. Call it where a request relies on the right, not where one is only looked at.
    /// </summary>
    public static bool Exercise(this Credential credential, ScopeRequirement requirement, HttpContext http, ScopeRequirement? recordAs = null)
    {
        if (!credential.Allows(requirement))
            return false;
        Record(credential, recordAs ?? requirement, http);
        return true;
    }

    /// <summary>
    /// Notes that the credential used every scope of a credential it made: minting relies on holding them, so narrowing must
    /// not take them away.
    /// </summary>
    public static void ExerciseAll(this Credential credential, ScopeSet minted, HttpContext http)
    {
        foreach (var flag in new[] { ScopeFlags.Api, ScopeFlags.Services, ScopeFlags.Admin })
        {
            if ((minted.Flags & flag) != 0)
                Record(credential, new ScopeRequirement(flag), http);
        }
        foreach (var service in minted.Services)
            Record(credential, ScopeRequirement.ForService(service), http);
    }

    private static void Record(Credential credential, ScopeRequirement requirement, HttpContext http)
    {
        if (credential.Kind is CredentialKinds.ApiToken or CredentialKinds.Service
            && long.TryParse(credential.TokenId, NumberStyles.None, CultureInfo.InvariantCulture, out var tokenId))
            http.RequestServices.GetRequiredService<UsageRecorder>().RecordScope(tokenId, requirement);
    }
}
