using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;
using static Portcullis.Tests.Infrastructure.OAuthHelpers;

namespace Portcullis.Tests;

/// <summary>
/// <c>POST /api/v1/keys/rotate</c>. The new key signs from then on; tokens signed by
/// the previous key verify until they expire; the JWKS lists both and never a private member.
/// </summary>
public abstract class KeyRotationTests(PortcullisServer server)
{
    private static readonly string[] PrivateMembers = ["d", "p", "q", "dp", "dq", "qi", "k", "oth"];

    [Fact]
    public async Task TheNewKeySignsAndTokensOfTheOldKeyKeepWorking()
    {
        var before = await server.LoginAsync();
        var oldKid = (string?)Header(before)["kid"];

        using var admin = server.Client(await server.AdminTokenAsync());
        using var response = await admin.PostAsync("/api/v1/keys/rotate", null);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.JsonAsync();
        var newKid = body.GetProperty("kid").GetString()!;
        Assert.NotEqual(oldKid, newKid);
        var keys = body.GetProperty("keys").EnumerateArray().ToList();
        Assert.Equal("signing", keys.Single(k => k.GetProperty("kid").GetString() == newKid).GetProperty("status").GetString());
        Assert.Equal("retired", keys.Single(k => k.GetProperty("kid").GetString() == oldKid).GetProperty("status").GetString());
        Assert.DoesNotContain("private", await response.Content.ReadAsStringAsync());

        var after = await server.LoginAsync();
        Assert.Equal(newKid, (string?)Header(after)["kid"]);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(before).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(after).GetAsync("/api/v1/me")).StatusCode);

        var jwks = await (await server.Client().GetAsync("/.well-known/jwks.json")).JsonAsync();
        var kids = jwks.GetProperty("keys").EnumerateArray().Select(k => k.GetProperty("kid").GetString()).ToList();
        Assert.Contains(oldKid, kids);
        Assert.Contains(newKid, kids);
        Assert.Equal(newKid, kids[0]); // the signing key first
        foreach (var key in jwks.GetProperty("keys").EnumerateArray())
        {
            foreach (var member in PrivateMembers)
                Assert.False(key.TryGetProperty(member, out _), $"JWKS key {key.GetProperty("kid")} has private member '{member}'");
            Assert.Equal("ES256", key.GetProperty("alg").GetString());
        }

        var listed = await (await admin.GetAsync("/api/v1/keys")).JsonAsync();
        Assert.Equal(newKid, listed.EnumerateArray().Single(k => k.GetProperty("status").GetString() == "signing").GetProperty("kid").GetString());
        var audit = await (await admin.GetAsync("/api/v1/audit?limit=500")).JsonAsync();
        Assert.Contains(audit.GetProperty("events").EnumerateArray(), e => e.GetProperty("event").GetString() == "key.rotated"
            && e.GetProperty("details").GetRawText().Contains(newKid) && e.GetProperty("actor").GetString() == "admin");
    }

    [Fact]
    public async Task OnlyAdminsMayRotateOrListKeys()
    {
        var (_, _, userToken) = await server.CreateUserAsync();
        using var user = server.Client(userToken);
        Assert.Equal(HttpStatusCode.Forbidden, (await user.PostAsync("/api/v1/keys/rotate", null)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await user.GetAsync("/api/v1/keys")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client().PostAsync("/api/v1/keys/rotate", null)).StatusCode);
    }
}

public sealed class SqliteKeyRotationTests(SqliteServer server) : KeyRotationTests(server), IClassFixture<SqliteServer>;

public sealed class PostgresKeyRotationTests(PostgresServer server) : KeyRotationTests(server), IClassFixture<PostgresServer>;

/// <summary>Retired keys leave the JWKS once every token they signed has expired (advanceable clock).</summary>
public sealed class KeyPruningTests(InProcessServer server) : IClassFixture<InProcessServer>
{
    [Fact]
    public async Task ARetiredKeyVerifiesUntilItsLongestTokenExpiresThenIsPruned()
    {
        using var anonymous = server.Client();
        var cli = (await (await anonymous.PostAsJsonAsync("/auth/token/cli", new { username = "admin", password = PortcullisServer.AdminPassword })).JsonAsync())
            .GetProperty("access_token").GetString()!;
        var oldKid = (string)Header(cli)["kid"]!;
        using var admin = server.Client(cli);
        var rotated = await (await admin.PostAsync("/api/v1/keys/rotate", null)).JsonAsync();
        var newKid = rotated.GetProperty("kid").GetString()!;

        // Seven days (the CLI token lifetime) less a second: the old key's CLI token still works.
        server.Clock.Advance(TimeSpan.FromDays(7) - TimeSpan.FromSeconds(1));
        Assert.Equal(HttpStatusCode.OK, (await server.Client(cli).GetAsync("/api/v1/me")).StatusCode);
        Assert.Contains(oldKid, await anonymous.GetStringAsync("/.well-known/jwks.json"));

        // Beyond the longest lifetime plus the clock skew, nothing the old key signed can be valid:
        // the next rotation prunes it, and the JWKS no longer lists it.
        server.Clock.Advance(TimeSpan.FromMinutes(1));
        var fresh = (await (await anonymous.PostAsJsonAsync("/auth/token", new { username = "admin", password = PortcullisServer.AdminPassword })).JsonAsync())
            .GetProperty("access_token").GetString()!;
        var again = await (await server.Client(fresh).PostAsync("/api/v1/keys/rotate", null)).JsonAsync();
        var kids = again.GetProperty("keys").EnumerateArray().Select(k => k.GetProperty("kid").GetString()).ToList();
        Assert.DoesNotContain(oldKid, kids);
        Assert.Contains(newKid, kids);
        var jwks = await anonymous.GetStringAsync("/.well-known/jwks.json");
        Assert.DoesNotContain(oldKid, jwks);
        Assert.Contains(newKid, jwks);
    }
}

/// <summary>
/// <c>Jwt:SigningAlgorithm=RS256</c> (RFC 9068 §2.1 has every conforming party support RS256): keys made after the
/// switch sign RS256, keys made before keep verifying ES256, each key verifies only its own algorithm, and a library
/// nobody here wrote (PyJWT) checks the RS256 tokens from the JWKS alone.
/// </summary>
public sealed class RsaSigningTests
{
    [Fact]
    public async Task SwitchingToRs256SignsWithRsaAfterTheNextRotationAndOldTokensKeepWorking()
    {
        var data = Directory.CreateTempSubdirectory("portcullis-rs256-").FullName;
        await using (var before = PortcullisServer.With(Provider.Sqlite, new() { ["DataDir"] = data }))
        {
            await before.InitializeAsync();   // makes the first key: ES256
            await before.StopAsync();
        }

        await using var server = PortcullisServer.With(Provider.Sqlite, new() { ["DataDir"] = data, ["Jwt:SigningAlgorithm"] = "RS256" });
        await server.InitializeAsync();
        // The existing key keeps signing, with its own algorithm, until the next rotation.
        var es256 = await server.LoginAsync();
        Assert.Equal("ES256", (string?)Header(es256)["alg"]);
        using (var rotated = await server.Client(await server.AdminTokenAsync()).PostAsync("/api/v1/keys/rotate", null))
            Assert.Equal(HttpStatusCode.OK, rotated.StatusCode);
        var rs256 = await server.LoginAsync();
        Assert.Equal("RS256", (string?)Header(rs256)["alg"]);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(es256).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(rs256).GetAsync("/api/v1/me")).StatusCode);

        var jwks = (await (await server.Client().GetAsync("/.well-known/jwks.json")).JsonAsync()).GetProperty("keys").EnumerateArray().ToList();
        var rsa = jwks.Single(k => k.GetProperty("kid").GetString() == (string?)Header(rs256)["kid"]);
        Assert.Equal(("RSA", "RS256"), (rsa.GetProperty("kty").GetString(), rsa.GetProperty("alg").GetString()));
        Assert.True(rsa.TryGetProperty("n", out _) && rsa.TryGetProperty("e", out _));
        foreach (var member in new[] { "d", "p", "q", "dp", "dq", "qi" })
            Assert.False(rsa.TryGetProperty(member, out _), $"the RSA key has its private member '{member}'");
        Assert.Contains(jwks, k => k.GetProperty("kty").GetString() == "EC");

        // A token cannot choose how it is checked: the RSA key's token relabelled ES256, or the EC key's relabelled RS256, fails.
        foreach (var (token, alg) in new[] { (rs256, "ES256"), (es256, "RS256") })
        {
            var header = Header(token);
            header["alg"] = alg;
            var relabelled = Encode(header) + token[token.IndexOf('.')..];
            Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(relabelled).GetAsync("/api/v1/me")).StatusCode);
        }

        var verified = await DebianPython.RunAsync("""
            import jwt, sys
            base, token = sys.argv[1], sys.stdin.read().strip()
            key = jwt.PyJWKClient(base + "/.well-known/jwks.json").get_signing_key_from_jwt(token)
            print(jwt.decode(token, key.key, algorithms=["RS256"], audience="portcullis", issuer=base)["sub"])
            """, [server.BaseAddress.ToString().TrimEnd('/')], rs256, isCode: true);
        Assert.True(verified.ExitCode == 0, verified.Stderr);
        Assert.Equal("admin", verified.Stdout.Trim());
    }

    [Fact]
    public async Task AnAlgorithmOtherThanEs256OrRs256IsRefusedAtStart()
    {
        var (exitCode, error) = await PortcullisServer.RefusedStartAsync("--Jwt:SigningAlgorithm=HS256");
        Assert.Equal(1, exitCode);
        Assert.Contains("Jwt:SigningAlgorithm", error);
    }
}
