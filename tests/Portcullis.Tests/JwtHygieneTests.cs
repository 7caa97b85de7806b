using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Portcullis.Tests.Infrastructure;
using static Portcullis.Tests.Infrastructure.OAuthHelpers;

namespace Portcullis.Tests;

/// <summary>
/// only well-formed ES256 access tokens of ours are accepted. Each test takes a real
/// token's claims, changes one thing, signs it (with the server's own key where the point is the
/// change, not the signature) and expects 401 <c>invalid_token</c>.
/// </summary>
public abstract class JwtHygieneTests(PortcullisServer server)
{
    private async Task<(JsonObject Header, JsonObject Payload, StoredKey Key)> GenuineAsync()
    {
        var jwt = await server.LoginAsync();
        var key = await server.CurrentSigningKeyAsync();
        var header = Header(jwt);
        Assert.Equal(key.Kid, (string?)header["kid"]);
        return (header, Payload(jwt), key);
    }

    private async Task AssertRejectedAsync(string token)
    {
        using var response = await server.Client(token).GetAsync("/api/v1/me");
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains("error=\"invalid_token\"", response.Header("WWW-Authenticate"));
    }

    private async Task AssertAcceptedAsync(string token) =>
        Assert.Equal(HttpStatusCode.OK, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);

    [Fact]
    public async Task AGenuineTokenReSignedWithTheServersKeyIsAccepted()
    {
        // The control for every test below: crafting itself does not break the token.
        var (header, payload, key) = await GenuineAsync();
        await AssertAcceptedAsync(Craft(header, payload, Es256(key.Key)));
    }

    [Fact]
    public async Task AlgNoneIsRejected()
    {
        var (header, payload, _) = await GenuineAsync();
        header["alg"] = "none";
        await AssertRejectedAsync(Encode(header) + "." + Encode(payload) + ".");
        header["alg"] = "None";
        await AssertRejectedAsync(Encode(header) + "." + Encode(payload) + ".");
    }

    [Fact]
    public async Task Hs256SignedWithThePublicKeyIsRejected()
    {
        // The classic key-confusion attack: the public key, as published, used as an HMAC secret.
        var (header, payload, key) = await GenuineAsync();
        header["alg"] = "HS256";
        var publicKey = key.Key.ExportSubjectPublicKeyInfo();
        var jwks = await server.Client().GetStringAsync("/.well-known/jwks.json");
        foreach (var secret in new[] { Encoding.ASCII.GetBytes(key.Key.ExportSubjectPublicKeyInfoPem()), publicKey, Encoding.UTF8.GetBytes(jwks) })
            await AssertRejectedAsync(Craft(header, payload, data => HMACSHA256.HashData(secret, data)));
    }

    [Fact]
    public async Task AlgorithmsOutsideTheAllowListAreRejected()
    {
        var (header, payload, _) = await GenuineAsync();
        using var rsa = RSA.Create(2048);
        header["alg"] = "RS256";
        await AssertRejectedAsync(Craft(header, payload, data => rsa.SignData(data, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1)));
        header["alg"] = "PS256";
        await AssertRejectedAsync(Craft(header, payload, data => rsa.SignData(data, HashAlgorithmName.SHA256, RSASignaturePadding.Pss)));
        using var p384 = ECDsa.Create(ECCurve.NamedCurves.nistP384);
        header["alg"] = "ES384";
        await AssertRejectedAsync(Craft(header, payload, data => p384.SignData(data, HashAlgorithmName.SHA384)));
    }

    [Fact]
    public async Task AnotherKeyUnderOurKidIsRejected()
    {
        var (header, payload, _) = await GenuineAsync();
        using var attacker = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        await AssertRejectedAsync(Craft(header, payload, Es256(attacker)));
    }

    [Fact]
    public async Task UnknownOrMissingKidIsRejected()
    {
        var (header, payload, key) = await GenuineAsync();
        header["kid"] = "no-such-key";
        await AssertRejectedAsync(Craft(header, payload, Es256(key.Key)));
        header.Remove("kid");
        await AssertRejectedAsync(Craft(header, payload, Es256(key.Key)));
    }

    [Theory]
    [InlineData("jku", "\"https://attacker.example/jwks.json\"")]
    [InlineData("x5u", "\"https://attacker.example/cert.pem\"")]
    [InlineData("x5c", "[\"MIIB\"]")]
    [InlineData("crit", "[\"exp\"]")]
    public async Task HeadersPointingAtKeyMaterialAreRejected(string name, string json)
    {
        // Signed with the real key: the header alone must be enough to refuse.
        var (header, payload, key) = await GenuineAsync();
        header[name] = JsonNode.Parse(json);
        await AssertRejectedAsync(Craft(header, payload, Es256(key.Key)));
    }

    [Fact]
    public async Task AnEmbeddedJwkIsRejected()
    {
        var (header, payload, key) = await GenuineAsync();
        using var attacker = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var p = attacker.ExportParameters(false);
        header["jwk"] = new JsonObject
        {
            ["kty"] = "EC", ["crv"] = "P-256",
            ["x"] = System.Buffers.Text.Base64Url.EncodeToString(p.Q.X), ["y"] = System.Buffers.Text.Base64Url.EncodeToString(p.Q.Y),
        };
        await AssertRejectedAsync(Craft(header, payload, Es256(attacker)));
        await AssertRejectedAsync(Craft(header, payload, Es256(key.Key)));
    }

    [Fact]
    public async Task WrongTypIsRejected()
    {
        var (header, payload, key) = await GenuineAsync();
        header["typ"] = "JWT";
        await AssertRejectedAsync(Craft(header, payload, Es256(key.Key)));
        header.Remove("typ");
        await AssertRejectedAsync(Craft(header, payload, Es256(key.Key)));
    }

    [Theory]
    [InlineData("iss", "\"https://attacker.example\"")]
    [InlineData("aud", "\"someone-else\"")]
    [InlineData("aud", "[\"someone-else\"]")]
    public async Task WrongIssuerOrAudienceIsRejected(string claim, string json)
    {
        var (header, payload, key) = await GenuineAsync();
        payload[claim] = JsonNode.Parse(json);
        await AssertRejectedAsync(Craft(header, payload, Es256(key.Key)));
    }

    [Theory]
    [InlineData("jti")]
    [InlineData("exp")]
    [InlineData("iat")]
    [InlineData("iss")]
    [InlineData("aud")]
    [InlineData("sub")]
    public async Task MissingRequiredClaimsAreRejected(string claim)
    {
        var (header, payload, key) = await GenuineAsync();
        payload.Remove(claim);
        await AssertRejectedAsync(Craft(header, payload, Es256(key.Key)));
    }

    [Fact]
    public async Task ExpiredTokensAreRejectedBeyondThirtySecondsOfSkew()
    {
        var (header, payload, key) = await GenuineAsync();
        payload["iat"] = Now - 3600;
        payload["nbf"] = Now - 3600;
        payload["exp"] = Now - 45;
        await AssertRejectedAsync(Craft(header, payload, Es256(key.Key)));
        // Within the skew, a clock that runs slightly ahead of the issuer's is tolerated.
        payload["exp"] = Now - 10;
        await AssertAcceptedAsync(Craft(header, payload, Es256(key.Key)));
    }

    [Fact]
    public async Task TokensFromTheFutureAreRejectedBeyondThirtySecondsOfSkew()
    {
        var (header, payload, key) = await GenuineAsync();
        var original = payload.DeepClone().AsObject();
        payload["nbf"] = Now + 60;
        await AssertRejectedAsync(Craft(header, payload, Es256(key.Key)));
        payload = original.DeepClone().AsObject();
        payload["iat"] = Now + 60;
        await AssertRejectedAsync(Craft(header, payload, Es256(key.Key)));
        payload = original.DeepClone().AsObject();
        payload["nbf"] = Now + 10;
        payload["iat"] = Now + 10;
        await AssertAcceptedAsync(Craft(header, payload, Es256(key.Key)));
    }

    [Fact]
    public async Task ATamperedPayloadIsRejected()
    {
        var (header, payload, key) = await GenuineAsync();
        var token = Craft(header, payload, Es256(key.Key));
        payload["scope"] = "api services admin";
        payload["sub"] = "someone-else";
        var parts = token.Split('.');
        await AssertRejectedAsync(parts[0] + "." + Encode(payload) + "." + parts[2]);
    }

    [Fact]
    public async Task AKeyAddedByAnotherInstanceIsFoundWhenATokenNamesIt()
    {
        // Another instance rotated the key and its notification never arrived: the unknown kid makes
        // this instance re-read the keys (rate-limited) rather than reject a genuine token.
        var (header, payload, _) = await GenuineAsync();
        using var newKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var kid = "injected-" + Guid.NewGuid().ToString("N")[..8];
        await server.ExecuteSqlAsync("INSERT INTO signing_keys (kid, algorithm, private_key, created_at) VALUES (@kid, 'ES256', @key, @at)",
            ("kid", kid), ("key", Seal(server.EncryptionKey(), Encoding.ASCII.GetBytes(Convert.ToBase64String(newKey.ExportPkcs8PrivateKey())), "signing-key", kid)),
            ("at", DateTime.UtcNow.AddDays(-1)));
        header["kid"] = kid;
        // The rate limit may still be running from an earlier unknown kid; it allows a reload every 5 seconds.
        var token = Craft(header, payload, Es256(newKey));
        var deadline = DateTime.UtcNow.AddSeconds(12);
        HttpStatusCode status;
        do
        {
            status = (await server.Client(token).GetAsync("/api/v1/me")).StatusCode;
            if (status == HttpStatusCode.OK)
                break;
            await Task.Delay(500);
        }
        while (DateTime.UtcNow < deadline);
        Assert.Equal(HttpStatusCode.OK, status);
        var jwks = await server.Client().GetStringAsync("/.well-known/jwks.json");
        Assert.Contains(kid, jwks);
    }
}

public sealed class SqliteJwtHygieneTests(SqliteServer server) : JwtHygieneTests(server), IClassFixture<SqliteServer>;

public sealed class PostgresJwtHygieneTests(PostgresServer server) : JwtHygieneTests(server), IClassFixture<PostgresServer>;
