using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// An OpenID Connect issuer in the test process, like a CI system's: a discovery document and a JWKS on loopback, and
/// RS256 tokens signed with its current key. It can rotate its key (the old one is no longer published), and it writes
/// the forgeries an attacker would try, by hand, so that no library tidies them up.
/// </summary>
public sealed class TestIssuer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private volatile SigningKey _current = SigningKey.Create();

    private TestIssuer(WebApplication app, string url)
    {
        _app = app;
        Url = url;
    }

    /// <summary>The issuer URL: the tokens' <c>iss</c>, and where the discovery document is.</summary>
    public string Url { get; }

    public string CurrentKid => _current.Kid;

    /// <summary>How often the JWKS was fetched.</summary>
    public int KeyFetches => _keyFetches;
    private int _keyFetches;

    public static async Task<TestIssuer> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        TestIssuer? issuer = null;
        app.MapGet("/.well-known/openid-configuration", () => Results.Json(new Dictionary<string, object>
        {
            ["issuer"] = issuer!.Url,
            ["jwks_uri"] = issuer.Url + "/keys",
            ["response_types_supported"] = new[] { "id_token" },
            ["subject_types_supported"] = new[] { "public" },
            ["id_token_signing_alg_values_supported"] = new[] { "RS256" },
        }));
        app.MapGet("/keys", () =>
        {
            Interlocked.Increment(ref issuer!._keyFetches);
            return Results.Json(new { keys = new[] { issuer._current.Jwk() } });
        });
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        issuer = new TestIssuer(app, address.TrimEnd('/'));
        return issuer;
    }

    /// <summary>A new signing key replaces the published one, as providers rotate theirs.</summary>
    public void RotateKey() => _current = SigningKey.Create();

    /// <summary>
    /// A token as a CI system issues it: <paramref name="claims"/> beside <c>iss</c>, <c>aud</c>, <c>jti</c>, <c>iat</c>,
    /// <c>nbf</c> and <c>exp</c> (each may be overridden, or removed by giving null).
    /// </summary>
    public string Token(string audience, Dictionary<string, object?> claims, TimeSpan? lifetime = null)
    {
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var payload = new Dictionary<string, object?>
        {
            ["iss"] = Url, ["aud"] = audience, ["jti"] = Guid.NewGuid().ToString(), ["sub"] = "repo:acme/model:ref:refs/heads/main",
            ["iat"] = now, ["nbf"] = now, ["exp"] = now + (long)(lifetime ?? TimeSpan.FromMinutes(5)).TotalSeconds,
        };
        foreach (var (key, value) in claims)
            payload[key] = value;
        return SignRs256(new Dictionary<string, object> { ["alg"] = "RS256", ["typ"] = "JWT", ["kid"] = _current.Kid }, payload.Where(p => p.Value is not null)
            .ToDictionary(p => p.Key, p => p.Value!));
    }

    /// <summary>Signed with a key the issuer never published, under a <c>kid</c> of the attacker's choosing.</summary>
    public string TokenWithUnpublishedKey(string audience, Dictionary<string, object?> claims)
    {
        var real = _current;
        _current = SigningKey.Create();
        try
        {
            return Token(audience, claims);
        }
        finally
        {
            _current = real;
        }
    }

    /// <summary><c>alg: none</c>: the claims, and no signature at all.</summary>
    public static string Unsigned(string signedToken)
    {
        var parts = signedToken.Split('.');
        return Encode(JsonSerializer.SerializeToUtf8Bytes(new { alg = "none", typ = "JWT" })) + "." + parts[1] + ".";
    }

    /// <summary>The classic confusion: HS256 with the issuer's public key (its JWKS entry, as text) as the HMAC secret.</summary>
    public string HmacWithPublicKey(string signedToken)
    {
        var parts = signedToken.Split('.');
        var header = Encode(JsonSerializer.SerializeToUtf8Bytes(new { alg = "HS256", typ = "JWT", kid = _current.Kid }));
        var input = Encoding.ASCII.GetBytes(header + "." + parts[1]);
        var secret = Encoding.UTF8.GetBytes(_current.Rsa.ExportSubjectPublicKeyInfoPem());
        return header + "." + parts[1] + "." + Encode(HMACSHA256.HashData(secret, input));
    }

    private string SignRs256(Dictionary<string, object> header, Dictionary<string, object> payload)
    {
        var input = Encode(JsonSerializer.SerializeToUtf8Bytes(header)) + "." + Encode(JsonSerializer.SerializeToUtf8Bytes(payload));
        var signature = _current.Rsa.SignData(Encoding.ASCII.GetBytes(input), HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        return input + "." + Encode(signature);
    }

    private static string Encode(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();

    private sealed record SigningKey(RSA Rsa, string Kid)
    {
        public static SigningKey Create() => new(RSA.Create(2048), "k" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6)));

        public object Jwk()
        {
            var p = Rsa.ExportParameters(false);
            return new { kty = "RSA", use = "sig", alg = "RS256", kid = Kid, n = Encode(p.Modulus!), e = Encode(p.Exponent!) };
        }
    }
}
