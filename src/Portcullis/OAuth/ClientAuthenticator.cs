using System.Text;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Security;

namespace Portcullis.OAuth;

/// <summary>How a client presented its credentials (RFC 6749 §2.3.1).</summary>
internal enum ClientAuthMethod : byte
{
    None,

    /// <summary><c>client_secret_basic</c>: HTTP Basic with the form-encoded id and secret.</summary>
    Basic,

    /// <summary><c>client_secret_post</c>: <c>client_id</c> and <c>client_secret</c> in the body.</summary>
    Post,
}

/// <summary>
/// The outcome of client authentication: an authenticated client and its owner; or the RFC 6749
/// error to answer; or neither, when the request carried no client credentials at all or only named
/// one of Portcullis's own public clients (<see cref="PublicClientId"/>).
/// </summary>
internal sealed record ClientAuthentication(ClientAuthMethod Method, CachedClient? Client, PrincipalState? Owner, IResult? Error)
{
    /// <summary>A first-party public client that named itself without a secret (RFC 6749 §2.1, §3.2.1); nothing is authenticated.</summary>
    public string? PublicClientId { get; init; }

    public static readonly ClientAuthentication None = new(ClientAuthMethod.None, null, null, null);
}

/// <summary>
/// Authenticates OAuth clients at <c>/auth/token</c>, <c>/auth/introspect</c> and <c>/auth/revoke</c>:
/// HTTP Basic or the body, never both. Answered from <see cref="ClientCache"/>: SHA-256 of the
/// secret, one lookup, a constant-time comparison of the digests.
/// </summary>
internal sealed class ClientAuthenticator(TokenFormat format, ClientCache clients, PrincipalCache principals, AuditLog audit)
{
    /// <summary>The challenge sent with every 401 <c>invalid_client</c> (RFC 6749 §5.2, RFC 7617).</summary>
    public const string BasicChallenge = "Basic realm=\"portcullis\", charset=\"UTF-8\"";

    /// <param name="purpose">What the client is doing, for the audit log: <c>client_credentials</c>, <c>introspect</c>, <c>revoke</c>.</param>
    public async Task<ClientAuthentication> AuthenticateAsync(HttpContext http, IReadOnlyDictionary<string, string> parameters, string purpose, CancellationToken cancellationToken)
    {
        var (method, clientId, secret, error) = Read(http.Request, parameters);
        if (error is not null)
            return new(method, null, null, TokenEndpoint.Error("invalid_request", error));
        if (method == ClientAuthMethod.None)
            return ClientAuthentication.None;
        if (secret is null && FirstPartyClients.Contains(clientId))
            return ClientAuthentication.None with { Method = method, PublicClientId = clientId };
        if (clientId is null || secret is null)
            return await FailAsync(http, method, purpose, clientId, null, "missing credentials", "Client authentication needs both client_id and client_secret.");

        var (result, failure) = await CheckAsync(method, clientId, secret, cancellationToken);
        if (failure is null)
            return result!;
        if (!failure.WrongSecret)
            return await FailAsync(http, method, purpose, clientId, failure.Client, failure.Reason, failure.Description);

        // Wrong secrets count against the address (docs/decisions.md), shared by every instance; once the address is
        // refused, the refusal comes from memory before anything is audited or written, so a flood costs next to
        // nothing. A right secret is never refused and costs no database access: 178 random bits cannot be guessed,
        // so refusing it would protect nothing and would let whoever shares the address lock the real client out.
        var throttle = http.RequestServices.GetRequiredService<LoginThrottle>();
        await using var attempt = await throttle.CheckAsync(LoginKind.ClientSecret, clientId, http, cancellationToken);
        if (attempt.IsThrottled)
        {
            http.Response.Headers.WWWAuthenticate = default;
            return new(method, null, null, TokenEndpoint.Error("temporarily_unavailable", attempt.RefuseWith429(http.Response), StatusCodes.Status429TooManyRequests));
        }
        var refused = await FailAsync(http, method, purpose, clientId, failure.Client, failure.Reason, failure.Description);
        await attempt.RecordFailureAsync();
        return refused;
    }

    /// <summary>Why a client was refused; a wrong secret counts against the address, and is audited unless the address is already throttled.</summary>
    private sealed record SecretFailure(CachedClient? Client, string Reason, string Description, bool WrongSecret = true);

    /// <summary>The client and its owner, or why it is refused.</summary>
    private async Task<(ClientAuthentication? Result, SecretFailure? Failure)> CheckAsync(ClientAuthMethod method, string clientId, string secret,
        CancellationToken cancellationToken)
    {
        // A secret that is not in pcc_ format, or an id that cannot be one, is refused without a lookup.
        if (!ClientCache.IsWellFormed(clientId) || !format.TryRead(secret, out var kind) || kind != TokenKind.ClientSecret)
            return (null, new(null, "unknown client or wrong secret", UnknownClient));
        var client = await clients.GetAsync(clientId, cancellationToken);
        // TokenDigest equality compares all 256 bits without an early exit.
        if (!client.IsKnown || client.SecretDigest != TokenFormat.Digest(secret))
            return (null, new(client.IsKnown ? client : null, client.IsKnown ? "wrong secret" : "unknown client", UnknownClient));
        if (client.SecretRevoked)
            return (null, new(client, "secret revoked", "The client's secret was revoked. Its owner can issue a new one with POST /api/v1/clients/{client_id}/rotate-secret."));
        var owner = await principals.GetAsync(client.OwnerId, cancellationToken);
        if (owner is null || owner.IsDisabled)
            return (null, new(client, "owner disabled", "The account that owns this client is disabled.", WrongSecret: false));
        return (new(method, client, owner, null), null);
    }

    private const string UnknownClient = "The client is unknown or the client secret is wrong.";

    private async ValueTask<ClientAuthentication> FailAsync(HttpContext http, ClientAuthMethod method, string purpose, string? clientId, CachedClient? client, string reason, string description)
    {
        // Off the request path: a flood of bad client credentials must not become a flood of database writes
        // (but it waits for room in the audit queue: the flood slows down, the log loses nothing).
        await audit.EnqueueAsync(audit.Create(http, AuditEvents.LoginFailed, subjectId: client?.OwnerId,
            details: new { path = purpose, client_id = clientId is null ? null : Truncate(clientId), reason }), http.RequestAborted);
        http.Response.Headers.WWWAuthenticate = BasicChallenge;
        return new(method, null, null, TokenEndpoint.Error("invalid_client", description, StatusCodes.Status401Unauthorized));
    }

    /// <summary>
    /// Reads client credentials from <c>Authorization: Basic</c> or from the body. Basic carries
    /// <c>urlencode(client_id):urlencode(client_secret)</c> (RFC 6749 §2.3.1), so both parts are
    /// form-decoded. Credentials in both places are an error, as is a malformed Basic header.
    /// </summary>
    internal static (ClientAuthMethod Method, string? ClientId, string? Secret, string? Error) Read(HttpRequest request, IReadOnlyDictionary<string, string> parameters)
    {
        var bodyId = parameters.GetValueOrDefault("client_id");
        var bodySecret = parameters.GetValueOrDefault("client_secret");
        var headers = request.Headers.Authorization;
        if (headers.Count > 1)
            return (ClientAuthMethod.None, null, null, "Send exactly one Authorization header.");
        var header = headers.Count == 1 ? headers[0] ?? "" : "";
        if (!header.StartsWith("Basic", StringComparison.OrdinalIgnoreCase) || (header.Length > 5 && header[5] != ' '))
        {
            if (bodyId is null && bodySecret is null)
                return (ClientAuthMethod.None, null, null, null);
            return (ClientAuthMethod.Post, bodyId, bodySecret, null);
        }

        if (bodyId is not null || bodySecret is not null)
            return (ClientAuthMethod.Basic, null, null,
                "The client credentials were sent twice, in the Authorization header and in the body. Use one method only (RFC 6749 §2.3.1).");
        string decoded;
        try
        {
            var bytes = Convert.FromBase64String(header[5..].Trim());
            decoded = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (Exception e) when (e is FormatException or DecoderFallbackException)
        {
            return (ClientAuthMethod.Basic, null, null, "The Basic credentials are not base64 of UTF-8 'client_id:client_secret'.");
        }
        var colon = decoded.IndexOf(':');
        if (colon < 0)
            return (ClientAuthMethod.Basic, null, null, "The Basic credentials must have the form 'client_id:client_secret'.");
        return (ClientAuthMethod.Basic, EmptyAsNull(FormDecode(decoded[..colon])), EmptyAsNull(FormDecode(decoded[(colon + 1)..])), null);
    }

    /// <summary>application/x-www-form-urlencoded decoding: '+' is a space, %XX a byte of UTF-8.</summary>
    private static string FormDecode(string s) => Uri.UnescapeDataString(s.Replace('+', ' '));

    private static string? EmptyAsNull(string s) => s.Length == 0 ? null : s;

    private static string Truncate(string s) => s.Length <= 64 ? s : s[..64] + "…";
}
