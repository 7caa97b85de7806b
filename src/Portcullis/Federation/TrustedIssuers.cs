using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Protocols;
using Microsoft.IdentityModel.Protocols.OpenIdConnect;
using Microsoft.IdentityModel.Tokens;
using Portcullis.Auth;

namespace Portcullis.Federation;

/// <summary>A subject token that passed every check: who signed it, what it says, and how to recognise it again.</summary>
/// <param name="Claims">The token's payload as JSON, which the rules' conditions read.</param>
internal sealed record ExternalToken(TrustedIssuer Issuer, string Subject, JsonElement Claims, string ReplayKey, DateTime ExpiresAt);

/// <summary>A trusted issuer as the admin page shows it.</summary>
public sealed record TrustedIssuerView(string Name, string Issuer, string Audience, IReadOnlyList<string> Algorithms, DateTime? KeysFetchedAt, int KeyCount,
    string? LastError, IReadOnlyList<ExchangeRuleView> Rules);

/// <summary>A rule of a trusted issuer as the admin page shows it: each claim with the patterns it may match.</summary>
public sealed record ExchangeRuleView(string Name, IReadOnlyList<(string Claim, string[] Patterns)> Conditions, string ActAs, string Scopes, TimeSpan Lifetime);

/// <summary>Why a subject token was refused; <see cref="Issuer"/> is known only when the token named a trusted one.</summary>
internal sealed record ExternalTokenRefusal(TrustedIssuer? Issuer, string Reason, bool IssuerUnreachable = false);

/// <summary>
/// Checks tokens signed by the trusted issuers (docs/trusted-issuers.md): the issuer's keys come from its OpenID Connect
/// discovery document and are kept for an hour; a token naming a key the issuer did not publish when last asked fetches
/// them again, at most once per <see cref="TrustedIssuer.UnknownKeyRefreshInterval"/>, so forged <c>kid</c>s cannot make
/// Portcullis hammer the provider. The checks are those of docs/trusted-issuers.md: only the issuer's allowed asymmetric
/// algorithms, no key material in the header, signature, <c>iss</c>, <c>aud</c>, <c>exp</c>, <c>nbf</c>, and an <c>iat</c>
/// that is not in the future.
/// </summary>
internal sealed partial class TrustedIssuers : IDisposable
{
    /// <summary>How long fetched keys are used before they are fetched again, whatever the tokens say.</summary>
    internal static readonly TimeSpan KeysMaxAge = TimeSpan.FromHours(1);

    private readonly IOptions<TrustedIssuersOptions> _options;
    private Dictionary<string, IssuerKeys>? _issuers;
    private readonly JsonWebTokenHandler _handler = new() { MapInboundClaims = false };
    private readonly HttpClient _http;
    private readonly TimeSpan _clockSkew;
    private readonly TimeProvider _time;
    private readonly ILogger<TrustedIssuers> _logger;

    public TrustedIssuers(IOptions<TrustedIssuersOptions> options, IOptions<JwtOptions> jwt, TimeProvider time, ILogger<TrustedIssuers> logger)
    {
        _options = options;
        _clockSkew = jwt.Value.ClockSkew;
        _time = time;
        _logger = logger;
        // The provider is named in configuration; redirects are not followed, so the keys come from where the discovery document says.
        _http = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false, UseCookies = false, ConnectTimeout = TimeSpan.FromSeconds(10) })
        {
            Timeout = TimeSpan.FromSeconds(15),
            MaxResponseContentBufferSize = 1 << 20,
        };
    }

    /// <summary>
    /// The issuers by URL, read on first use rather than at construction: a configuration mistake is then reported by the
    /// options' validation at start, with every mistake named, not as a failure to build a background service.
    /// </summary>
    private Dictionary<string, IssuerKeys> ByIssuer => LazyInitializer.EnsureInitialized(ref _issuers,
        () => _options.Value.Issuers.ToDictionary(i => i.Issuer, i => new IssuerKeys(i), StringComparer.Ordinal));

    public bool Any => ByIssuer.Count > 0;

    /// <summary>The issuers and their rules, with when their keys were last fetched and the last failure, for the admin page.</summary>
    public IReadOnlyList<TrustedIssuerView> Views() =>
    [
        .. ByIssuer.Values.Select(k => new TrustedIssuerView(k.Issuer.Name, k.Issuer.Issuer, k.Issuer.Audience, k.Issuer.Algorithms,
            k.Snapshot?.FetchedAt, k.Snapshot?.Keys.Count ?? 0, k.LastError,
            [.. k.Issuer.Rules.Select(r => new ExchangeRuleView(r.Name, [.. r.Conditions.Select(c => (c.Claim, c.Patterns))], r.ActAs, r.Scopes.ToString(), r.Lifetime))])),
    ];

    public async Task<(ExternalToken? Token, ExternalTokenRefusal? Refusal)> ValidateAsync(string token, CancellationToken cancellationToken)
    {
        JsonWebToken parsed;
        try
        {
            parsed = new JsonWebToken(token);
        }
        catch (ArgumentException)
        {
            return Refuse(null, "The subject_token is not a signed JWT.");
        }
        if (!parsed.TryGetPayloadValue<string>(JwtRegisteredClaimNames.Iss, out var iss) || iss is null || !ByIssuer.TryGetValue(iss, out var keys))
            return Refuse(null, "The subject_token was not issued by an issuer this server trusts (its 'iss' is not in Auth:TrustedIssuers).");
        var issuer = keys.Issuer;
        if (!issuer.Algorithms.Contains(parsed.Alg, StringComparer.Ordinal))
            return Refuse(issuer, $"The subject_token is signed with '{Shorten(parsed.Alg)}'; tokens of '{issuer.Name}' must use {string.Join(" or ", issuer.Algorithms)}.");
        foreach (var forbidden in (ReadOnlySpan<string>)["jku", "x5u", "jwk", "x5c", "crit"])
        {
            if (parsed.TryGetHeaderValue<object>(forbidden, out _))
                return Refuse(issuer, $"The subject_token's header carries '{forbidden}': keys come from the issuer's discovery document only.");
        }
        if (string.IsNullOrEmpty(parsed.Kid) || parsed.Kid.Length > 256)
            return Refuse(issuer, "The subject_token's header names no key ('kid').");

        var (key, unreachable) = await KeyAsync(keys, parsed.Kid, cancellationToken);
        if (key is null)
        {
            return unreachable
                ? (null, new ExternalTokenRefusal(issuer, $"The keys of '{issuer.Name}' could not be fetched from {issuer.DiscoveryUrl}. Try again shortly.", IssuerUnreachable: true))
                : Refuse(issuer, $"The subject_token is signed with a key that '{issuer.Name}' does not publish.");
        }
        var result = await _handler.ValidateTokenAsync(parsed, new TokenValidationParameters
        {
            ValidIssuer = issuer.Issuer,
            ValidAudience = issuer.Audience,
            ValidAlgorithms = issuer.Algorithms,
            IssuerSigningKey = key,
            TryAllIssuerSigningKeys = false,
            RequireSignedTokens = true,
            RequireExpirationTime = true,
            ValidateLifetime = false,   // checked below against this server's clock, with a reason for each failure
        });
        if (!result.IsValid)
        {
            return Refuse(issuer, result.Exception switch
            {
                SecurityTokenInvalidAudienceException => $"The subject_token is not meant for this server: its 'aud' must be '{issuer.Audience}'.",
                SecurityTokenInvalidIssuerException => "The subject_token's issuer does not match.",
                SecurityTokenInvalidAlgorithmException => $"The subject_token's algorithm is not allowed for '{issuer.Name}'.",
                _ => "The subject_token's signature does not verify.",
            });
        }

        var now = _time.GetUtcNow().UtcDateTime;
        var expires = parsed.ValidTo;
        if (expires == DateTime.MinValue)
            return Refuse(issuer, "The subject_token has no expiry ('exp').");
        if (now >= expires + _clockSkew)
            return Refuse(issuer, "The subject_token has expired. Ask the provider for a fresh one.");
        if (parsed.ValidFrom != DateTime.MinValue && parsed.ValidFrom > now + _clockSkew)
            return Refuse(issuer, "The subject_token is not valid yet ('nbf' is in the future).");
        if (parsed.IssuedAt == DateTime.MinValue)
            return Refuse(issuer, "The subject_token has no issue time ('iat').");
        if (parsed.IssuedAt > now + _clockSkew)
            return Refuse(issuer, "The subject_token was issued in the future ('iat'); check the clocks.");
        if (string.IsNullOrEmpty(parsed.Subject))
            return Refuse(issuer, "The subject_token has no subject ('sub').");
        using var payload = JsonDocument.Parse(Base64UrlEncoder.DecodeBytes(parsed.EncodedPayload));
        return (new ExternalToken(issuer, parsed.Subject, payload.RootElement.Clone(), ReplayKey(issuer, parsed, token), expires + _clockSkew), null);
    }

    private static (ExternalToken?, ExternalTokenRefusal?) Refuse(TrustedIssuer? issuer, string reason) => (null, new ExternalTokenRefusal(issuer, reason));

    /// <summary>What marks a subject token as used: its <c>jti</c> within its issuer, or, without one, the digest of the whole token.</summary>
    private static string ReplayKey(TrustedIssuer issuer, JsonWebToken token, string text)
    {
        var identity = string.IsNullOrEmpty(token.Id) ? "token\n" + text : "jti\n" + issuer.Issuer + "\n" + token.Id;
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(identity)));
    }

    private static string Shorten(string s) => s.Length <= 16 ? s : s[..16] + "…";

    /// <summary>The issuer's key named <paramref name="kid"/>, fetching the keys when they are old or do not have it (rate-limited).</summary>
    private async Task<(SecurityKey? Key, bool Unreachable)> KeyAsync(IssuerKeys keys, string kid, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var snapshot = keys.Snapshot;
        if (snapshot is not null && now - snapshot.FetchedAt < KeysMaxAge && snapshot.Keys.TryGetValue(kid, out var known))
            return (known, false);
        if (now - keys.LastAttemptAt < keys.Issuer.UnknownKeyRefreshInterval && !(snapshot is not null && now - snapshot.FetchedAt >= KeysMaxAge))
            return (snapshot?.Keys.GetValueOrDefault(kid), snapshot is null);

        await keys.Fetching.WaitAsync(cancellationToken);
        try
        {
            // Another request may have fetched them while this one waited.
            if (keys.Snapshot is { } fresh && fresh != snapshot && fresh.Keys.TryGetValue(kid, out var fetched))
                return (fetched, false);
            if (keys.Snapshot != snapshot)
                return (null, false);
            keys.LastAttemptAt = now;
            try
            {
                var retriever = new HttpDocumentRetriever(_http) { RequireHttps = keys.Issuer.DiscoveryUrl.StartsWith("https:", StringComparison.Ordinal) };
                var configuration = await OpenIdConnectConfigurationRetriever.GetAsync(keys.Issuer.DiscoveryUrl, retriever, cancellationToken);
                // OpenID Connect Discovery §4.3: the document must be the issuer's own.
                if (!string.Equals(configuration.Issuer, keys.Issuer.Issuer, StringComparison.Ordinal))
                    throw new InvalidDataException($"the discovery document names the issuer '{configuration.Issuer}', not '{keys.Issuer.Issuer}'");
                var byKid = new Dictionary<string, SecurityKey>(StringComparer.Ordinal);
                foreach (var key in configuration.SigningKeys.Where(k => !string.IsNullOrEmpty(k.KeyId)))
                    byKid.TryAdd(key.KeyId, key);
                keys.Snapshot = new KeySnapshot(byKid, now);
                keys.LastError = null;
                Log.KeysFetched(_logger, keys.Issuer.Name, byKid.Count);
                return (byKid.GetValueOrDefault(kid), false);
            }
            catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                keys.LastError = e.Message;
                Log.KeysUnavailable(_logger, keys.Issuer.Name, keys.Issuer.DiscoveryUrl, e.Message);
                // Keys that are merely old still verify while the provider is away.
                return (snapshot?.Keys.GetValueOrDefault(kid), snapshot is null || !snapshot.Keys.ContainsKey(kid));
            }
        }
        finally
        {
            keys.Fetching.Release();
        }
    }

    public void Dispose()
    {
        _http.Dispose();
        foreach (var keys in _issuers?.Values ?? Enumerable.Empty<IssuerKeys>())
            keys.Fetching.Dispose();
    }

    private sealed record KeySnapshot(IReadOnlyDictionary<string, SecurityKey> Keys, DateTime FetchedAt);

    private sealed class IssuerKeys(TrustedIssuer issuer)
    {
        public TrustedIssuer Issuer { get; } = issuer;
        public SemaphoreSlim Fetching { get; } = new(1, 1);
        public volatile KeySnapshot? Snapshot;
        public DateTime LastAttemptAt = DateTime.MinValue;
        public volatile string? LastError;
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Fetched {Count} signing keys of trusted issuer {Issuer}")]
        public static partial void KeysFetched(ILogger logger, string issuer, int count);

        [LoggerMessage(2, LogLevel.Warning, "Could not fetch the keys of trusted issuer {Issuer} from {Url}: {Error}")]
        public static partial void KeysUnavailable(ILogger logger, string issuer, string url, string error);
    }
}
