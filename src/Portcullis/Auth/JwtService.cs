using System.Collections.Concurrent;
using System.Security.Claims;
using System.Security.Cryptography;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Auth;

/// <summary>A validated access token's claims that Portcullis acts on.</summary>
internal sealed record JwtClaims(string Subject, string Jti, ScopeSet Scopes, long? PrincipalId, int? CredentialVersion, string? ClientId, DateTime IssuedAt, DateTime ExpiresAt,
    DateTime? NotBefore = null, int? OwnerVersion = null);

/// <summary>
/// Issues and validates ES256 or RS256 access tokens (<c>typ: at+jwt</c>, RFC 9068). Validation is strict:
/// a known <c>kid</c> and only the algorithm of the key it names, no key material taken from the token, our issuer and audience,
/// and a clock skew of at most 30 seconds.
/// <para>A token that passed once is remembered by the SHA-256 of its text until it expires, so a
/// client sending the same JWT again pays a hash and a lookup instead of an ECDSA verification
/// (about 55 µs). Nothing that can change for the same text is cached: expiry is checked on every
/// hit, and the deny-list and the owner's state are checked by <see cref="CredentialVerifier"/> after
/// this. Failures are never cached (an unknown <c>kid</c> may become known).</para>
/// </summary>
internal sealed class JwtService(SigningKeys keys, IOptions<JwtOptions> options, PublicUrl publicUrl, TimeProvider time)
{
    public const string TokenType = "at+jwt";
    public const string CredentialVersionClaim = "pcv";

    /// <summary>The owner's database id, never reused: a JWT dies with its user even if the name is taken again.</summary>
    public const string PrincipalIdClaim = "pcu";

    /// <summary>In a client's token: its owner's credential version at issue, so that disabling the owner ends it for good.</summary>
    public const string OwnerVersionClaim = "pco";

    private readonly JsonWebTokenHandler _handler = new() { SetDefaultTimesOnTokenCreation = false, MapInboundClaims = false };
    private readonly JwtOptions _options = options.Value;

    /// <summary>Bounds the memory of <see cref="_validated"/>: about 0.5 KB an entry.</summary>
    internal const int ValidatedCacheCapacity = 20_000;

    private readonly ConcurrentDictionary<TokenDigest, JwtClaims> _validated = new();
    private int _validatedCount;
    private int _sweeping;

    public sealed record Issued(string AccessToken, string Jti, int ExpiresIn, ScopeSet Scopes);

    public Issued Issue(string subject, ScopeSet scopes, TimeSpan lifetime, long? principalId, int? credentialVersion, string clientId, int? ownerVersion = null)
    {
        var now = time.GetUtcNow().UtcDateTime;
        var jti = Base64UrlEncoder.Encode(RandomNumberGenerator.GetBytes(16));
        var claims = new Dictionary<string, object>
        {
            [JwtRegisteredClaimNames.Sub] = subject,
            [JwtRegisteredClaimNames.Jti] = jti,
            ["scope"] = scopes.ToString(),
        };
        if (principalId is { } id)
            claims[PrincipalIdClaim] = id;
        if (credentialVersion is { } v)
            claims[CredentialVersionClaim] = v;
        claims["client_id"] = clientId;
        if (ownerVersion is { } owner)
            claims[OwnerVersionClaim] = owner;
        var descriptor = new SecurityTokenDescriptor
        {
            Issuer = publicUrl.Value,
            Audience = _options.Audience,
            IssuedAt = now,
            NotBefore = now,
            Expires = now + lifetime,
            TokenType = TokenType,
            Claims = claims,
            SigningCredentials = keys.Current,
        };
        return new Issued(_handler.CreateToken(descriptor), jti, (int)lifetime.TotalSeconds, scopes);
    }

    public static bool LooksLikeJwt(ReadOnlySpan<char> token) => token.Count('.') == 2 && token.Length < 8192;

    public async ValueTask<JwtClaims?> ValidateAsync(string token, CancellationToken cancellationToken = default)
    {
        var digest = TokenFormat.Digest(token);
        var now = time.GetUtcNow().UtcDateTime;
        if (_validated.TryGetValue(digest, out var cached))
        {
            if (now < cached.ExpiresAt + _options.ClockSkew)
                return cached;
            if (_validated.TryRemove(digest, out _))
                Interlocked.Decrement(ref _validatedCount);
            return null;
        }

        var claims = await ValidateUncachedAsync(token, cancellationToken);
        if (claims is not null)
            Remember(digest, claims, now);
        return claims;
    }

    private void Remember(in TokenDigest digest, JwtClaims claims, DateTime now)
    {
        if (Volatile.Read(ref _validatedCount) >= ValidatedCacheCapacity)
            Sweep(now);
        if (Volatile.Read(ref _validatedCount) < ValidatedCacheCapacity && _validated.TryAdd(digest, claims))
            Interlocked.Increment(ref _validatedCount);
    }

    /// <summary>Drops expired entries; if the cache is still full, empties it (every entry can be validated again).</summary>
    private void Sweep(DateTime now)
    {
        if (Interlocked.Exchange(ref _sweeping, 1) == 1)
            return;
        try
        {
            foreach (var (key, value) in _validated)
            {
                if (now >= value.ExpiresAt + _options.ClockSkew && _validated.TryRemove(key, out _))
                    Interlocked.Decrement(ref _validatedCount);
            }
            if (Volatile.Read(ref _validatedCount) >= ValidatedCacheCapacity)
            {
                _validated.Clear();
                Volatile.Write(ref _validatedCount, 0);
            }
        }
        finally
        {
            Volatile.Write(ref _sweeping, 0);
        }
    }

    /// <summary>The full validation, without the cache of tokens already validated.</summary>
    internal async Task<JwtClaims?> ValidateUncachedAsync(string token, CancellationToken cancellationToken = default)
    {
        if (AllowedHeader(token) is not var (kid, alg))
            return null;
        // A kid we do not know may come from a rotation on another instance: look once (rate-limited). The key
        // verifies only the algorithm it was made for: no token chooses how it is checked.
        if (await keys.FindOrReloadAsync(kid, cancellationToken) is not { } key || key.Algorithm != alg)
            return null;
        var now = time.GetUtcNow().UtcDateTime;
        var parameters = new TokenValidationParameters
        {
            ValidIssuer = publicUrl.Value,
            ValidAudience = _options.Audience,
            ValidAlgorithms = [key.Algorithm],
            ValidTypes = [TokenType],
            RequireSignedTokens = true,
            RequireExpirationTime = true,
            ClockSkew = _options.ClockSkew,
            TryAllIssuerSigningKeys = false,
            IssuerSigningKeyResolver = (_, _, _, _) => [key.Key],
            LifetimeValidator = (notBefore, expires, _, _) =>
                expires is { } exp && now < exp.ToUniversalTime() + _options.ClockSkew &&
                (notBefore is null || notBefore.Value.ToUniversalTime() <= now + _options.ClockSkew),
        };
        var result = await _handler.ValidateTokenAsync(token, parameters);
        if (!result.IsValid || result.SecurityToken is not JsonWebToken jwt)
            return null;
        if (string.IsNullOrEmpty(jwt.Id) || string.IsNullOrEmpty(jwt.Subject))
            return null;
        var issuedAt = jwt.IssuedAt;
        if (issuedAt == DateTime.MinValue || issuedAt > now + _options.ClockSkew)
            return null;
        int? version = jwt.TryGetPayloadValue<int>(CredentialVersionClaim, out var v) ? v : null;
        long? principalId = jwt.TryGetPayloadValue<long>(PrincipalIdClaim, out var id) ? id : null;
        jwt.TryGetPayloadValue<string>("client_id", out var clientId);
        jwt.TryGetPayloadValue<string>("scope", out var scope);
        int? ownerVersion = jwt.TryGetPayloadValue<int>(OwnerVersionClaim, out var o) ? o : null;
        return new JwtClaims(jwt.Subject, jwt.Id, ScopeSet.Parse(scope), principalId, version, clientId, issuedAt, jwt.ValidTo,
            jwt.ValidFrom == DateTime.MinValue ? null : jwt.ValidFrom, ownerVersion);
    }

    /// <summary>
    /// Refuses headers that point at key material (<c>jku</c>, <c>x5u</c>, <c>jwk</c>, <c>x5c</c>) and
    /// any algorithm but ES256 and RS256 before the library looks at the token. Returns the <c>kid</c> and <c>alg</c>, or null.
    /// </summary>
    private static (string Kid, string Alg)? AllowedHeader(string token)
    {
        JsonWebToken parsed;
        try
        {
            parsed = new JsonWebToken(token);
        }
        catch (ArgumentException)
        {
            return null;
        }
        if (!SigningKeys.Algorithms.Contains(parsed.Alg) || string.IsNullOrEmpty(parsed.Kid) || parsed.Kid.Length > 64)
            return null;
        foreach (var forbidden in (ReadOnlySpan<string>)["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"])
        {
            if (parsed.TryGetHeaderValue<object>(forbidden, out _))
                return null;
        }
        return (parsed.Kid, parsed.Alg);
    }
}

/// <summary>The public base URL of this server: the JWT issuer and the base of discovery links.</summary>
internal sealed record PublicUrl(string Value);
