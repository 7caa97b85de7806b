using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;
using static Portcullis.Tests.Infrastructure.OAuthHelpers;

namespace Portcullis.Tests;

/// <summary>
/// <c>/auth/introspect</c> (RFC 7662) and <c>/auth/revoke</c> (RFC 7009) for
/// API tokens and JWTs, and the JWT deny-list behind revocation.
/// </summary>
public abstract class IntrospectionTests(PortcullisServer server)
{
    private const string Inactive = "{\"active\":false}";

    private async Task<HttpResponseMessage> IntrospectAsync(string token, AuthenticationHeaderValue? authorization, params KeyValuePair<string, string>[] extra) =>
        await server.PostFormAsync("/auth/introspect", [new("token", token), .. extra], authorization);

    private async Task<AuthenticationHeaderValue> AdminBearerAsync() => new("Bearer", await server.AdminTokenAsync());

    private async Task<AuthenticationHeaderValue> ClientBasicAsync()
    {
        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["services"]);
        return Basic(c.ClientId, c.ClientSecret);
    }

    private Task<HttpResponseMessage> RevokeAsync(string token, params KeyValuePair<string, string>[] extra) =>
        server.PostFormAsync("/auth/revoke", [new("token", token), .. extra]);

    [Fact]
    public async Task IntrospectionWithoutCallerAuthenticationIs401()
    {
        var token = await server.AdminTokenAsync();
        using var response = await IntrospectAsync(token, null);
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        var challenges = response.Headers.WwwAuthenticate.Select(h => h.Scheme).ToList();
        Assert.Contains("Bearer", challenges);
        Assert.Contains("Basic", challenges);
        Assert.Equal("invalid_client", (await response.JsonAsync()).GetProperty("error").GetString());

        using var wrongSecret = await IntrospectAsync(token, Basic("client-aaaaaaaaaaaaaaaaaaaa", "pcc_nope"));
        Assert.Equal(HttpStatusCode.Unauthorized, wrongSecret.StatusCode);
        Assert.Equal("invalid_client", (await wrongSecret.JsonAsync()).GetProperty("error").GetString());

        using var badBearer = await IntrospectAsync(token, new AuthenticationHeaderValue("Bearer", "pcp_garbage"));
        Assert.Equal(HttpStatusCode.Unauthorized, badBearer.StatusCode);
        Assert.Contains("invalid_token", badBearer.Header("WWW-Authenticate"));
    }

    [Fact]
    public async Task IntrospectionNeedsAnAdminCredentialOrAClient()
    {
        var (_, _, userToken) = await server.CreateUserAsync();
        using var response = await IntrospectAsync(userToken, new AuthenticationHeaderValue("Bearer", userToken));
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Contains("insufficient_scope", response.Header("WWW-Authenticate"));
        Assert.Equal("insufficient_scope", (await response.JsonAsync()).GetProperty("error").GetString());

        // Any OAuth client may introspect, including a non-admin user's client.
        var c = await server.CreateClientAsync(userToken, ["services"]);
        using var asClient = await IntrospectAsync(userToken, Basic(c.ClientId, c.ClientSecret));
        Assert.Equal(HttpStatusCode.OK, asClient.StatusCode);
        // The client may authenticate in the body as well.
        using var inBody = await IntrospectAsync(userToken, null,
            new KeyValuePair<string, string>("client_id", c.ClientId), new KeyValuePair<string, string>("client_secret", c.ClientSecret));
        Assert.Equal(HttpStatusCode.OK, inBody.StatusCode);
        Assert.True((await inBody.JsonAsync()).GetProperty("active").GetBoolean());
    }

    [Fact]
    public async Task AnActiveApiTokenIsDescribed()
    {
        var (username, _, userToken) = await server.CreateUserAsync();
        var created = await (await server.Client(userToken).PostAsJsonAsync("/api/v1/tokens", new { name = "described", expires_in_days = 3, scopes = new[] { "services" } })).JsonAsync();
        var token = created.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        using var response = await IntrospectAsync(token, await AdminBearerAsync(), new KeyValuePair<string, string>("token_type_hint", "access_token"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("no-store", response.Header("Cache-Control"));
        var body = await response.JsonAsync();
        Assert.True(body.GetProperty("active").GetBoolean());
        Assert.Equal("services", body.GetProperty("scope").GetString());
        Assert.Equal(username, body.GetProperty("username").GetString());
        Assert.Equal(username, body.GetProperty("sub").GetString());
        Assert.Equal("Bearer", body.GetProperty("token_type").GetString());
        Assert.Equal(created.GetProperty("id").GetInt64().ToString(), body.GetProperty("jti").GetString());
        Assert.Equal(server.BaseAddress.ToString().TrimEnd('/'), body.GetProperty("iss").GetString());
        Assert.Equal(created.GetProperty("expires_at").GetDateTimeOffset().ToUnixTimeSeconds(), body.GetProperty("exp").GetInt64());
        Assert.Equal(created.GetProperty("created_at").GetDateTimeOffset().ToUnixTimeSeconds(), body.GetProperty("iat").GetInt64());
        Assert.False(body.TryGetProperty("client_id", out _));
    }

    [Fact]
    public async Task IntrospectionIsNotAUseOfTheToken()
    {
        var (_, _, userToken) = await server.CreateUserAsync();
        var created = await (await server.Client(userToken).PostAsJsonAsync("/api/v1/tokens", new { name = "unused" })).JsonAsync();
        var token = created.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        Assert.True((await (await IntrospectAsync(token, await AdminBearerAsync())).JsonAsync()).GetProperty("active").GetBoolean());
        await Task.Delay(600); // past the usage flush interval the tests run with
        var listed = await (await server.Client(userToken).GetAsync($"/api/v1/tokens/{created.GetProperty("id").GetInt64()}")).JsonAsync();
        Assert.Equal(JsonValueKind.Null, listed.GetProperty("last_used_at").ValueKind);
    }

    [Fact]
    public async Task AnActiveJwtIsDescribedWithItsClaims()
    {
        var jwt = await server.LoginAsync();
        var claims = Payload(jwt);
        using var response = await IntrospectAsync(jwt, await ClientBasicAsync());
        var body = await response.JsonAsync();
        Assert.True(body.GetProperty("active").GetBoolean());
        Assert.Equal("api services admin", body.GetProperty("scope").GetString());
        Assert.Equal("admin", body.GetProperty("username").GetString());
        Assert.Equal("admin", body.GetProperty("sub").GetString());
        Assert.Equal("portcullis", body.GetProperty("aud").GetString());
        Assert.Equal((string?)claims["iss"], body.GetProperty("iss").GetString());
        Assert.Equal((string?)claims["jti"], body.GetProperty("jti").GetString());
        Assert.Equal((long)claims["exp"]!, body.GetProperty("exp").GetInt64());
        Assert.Equal((long)claims["iat"]!, body.GetProperty("iat").GetInt64());
        Assert.Equal((long)claims["nbf"]!, body.GetProperty("nbf").GetInt64());
        Assert.Equal("Bearer", body.GetProperty("token_type").GetString());
    }

    [Fact]
    public async Task AClientTokenIsDescribedWithItsClientId()
    {
        var (username, _, userToken) = await server.CreateUserAsync();
        var c = await server.CreateClientAsync(userToken, ["api"]);
        var jwt = await server.ClientTokenAsync(c);
        var body = await (await IntrospectAsync(jwt, await AdminBearerAsync())).JsonAsync();
        Assert.True(body.GetProperty("active").GetBoolean());
        Assert.Equal(c.ClientId, body.GetProperty("client_id").GetString());
        Assert.Equal(c.ClientId, body.GetProperty("sub").GetString());
        Assert.Equal(username, body.GetProperty("username").GetString());
        Assert.Equal("api", body.GetProperty("scope").GetString());
    }

    [Fact]
    public async Task GarbageExpiredAndRevokedTokensAreExactlyInactive()
    {
        var auth = await AdminBearerAsync();
        var key = await server.CurrentSigningKeyAsync();
        var jwt = await server.LoginAsync();
        var expiredPayload = Payload(jwt);
        expiredPayload["iat"] = Now - 7200;
        expiredPayload["nbf"] = Now - 7200;
        expiredPayload["exp"] = Now - 3600;
        var expired = Craft(Header(jwt), expiredPayload, Es256(key.Key));

        var (_, _, userToken) = await server.CreateUserAsync();
        var revoked = await server.CreateTokenAsync(userToken, new { name = "to-revoke" });
        Assert.Equal(HttpStatusCode.OK, (await RevokeAsync(revoked)).StatusCode);
        var revokedJwt = await server.LoginAsync();
        Assert.Equal(HttpStatusCode.OK, (await RevokeAsync(revokedJwt)).StatusCode);
        var clientSecret = (await server.CreateClientAsync(userToken, ["api"])).ClientSecret;

        var checksummed = "pcp_" + new string('q', 30);
        checksummed += TokensApiTests.Checksum(checksummed);
        foreach (var token in new[] { "garbage", "a.b.c", "pcp_AAAA", checksummed, expired, revoked, revokedJwt, clientSecret, jwt[..^4] + "AAAA", new string('x', 4000) })
        {
            using var response = await IntrospectAsync(token, auth);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(Inactive, await response.Content.ReadAsStringAsync());
        }
    }

    [Fact]
    public async Task ADisabledOwnersTokensAreInactive()
    {
        var (username, _, userToken) = await server.CreateUserAsync();
        using var admin = server.Client(await server.AdminTokenAsync());
        Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { disabled = true })).StatusCode);
        Assert.Equal(Inactive, await (await IntrospectAsync(userToken, await AdminBearerAsync())).Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task IntrospectionRequestsAreCheckedLikeTokenRequests()
    {
        var auth = await AdminBearerAsync();
        using var missing = await server.PostFormAsync("/auth/introspect", [new("token_type_hint", "access_token")], auth);
        Assert.Equal(HttpStatusCode.BadRequest, missing.StatusCode);
        Assert.Equal("invalid_request", (await missing.JsonAsync()).GetProperty("error").GetString());
        using var twice = await server.PostFormAsync("/auth/introspect", [new("token", "a"), new("token", "b")], auth);
        Assert.Equal("invalid_request", (await twice.JsonAsync()).GetProperty("error").GetString());
        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["api"]);
        using var both = await server.PostFormAsync("/auth/introspect",
            [new("token", "a"), new("client_id", c.ClientId), new("client_secret", c.ClientSecret)], Basic(c.ClientId, c.ClientSecret));
        Assert.Equal("invalid_request", (await both.JsonAsync()).GetProperty("error").GetString());
        // A hint that names nothing we know is still only a hint.
        var token = await server.AdminTokenAsync();
        using var oddHint = await IntrospectAsync(token, auth, new KeyValuePair<string, string>("token_type_hint", "banana"));
        Assert.True((await oddHint.JsonAsync()).GetProperty("active").GetBoolean());
    }

    [Fact]
    public async Task TheHolderOfAnApiTokenCanRevokeItWithoutAnyOtherCredential()
    {
        var (username, _, userToken) = await server.CreateUserAsync();
        var token = await server.CreateTokenAsync(userToken, new { name = "leaked" });
        Assert.Equal(HttpStatusCode.OK, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);

        using var response = await RevokeAsync(token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("", await response.Content.ReadAsStringAsync());
        Assert.Contains("no-store", response.Header("Cache-Control"));
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);
        var tokens = await (await server.Client(userToken).GetAsync("/api/v1/tokens")).JsonAsync();
        Assert.Equal("revoked", tokens.EnumerateArray().Single(t => t.GetProperty("name").GetString() == "leaked").GetProperty("status").GetString());

        // Again, and for tokens nobody knows: the same 200.
        Assert.Equal(HttpStatusCode.OK, (await RevokeAsync(token)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await RevokeAsync("pcp_" + new string('z', 36))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await RevokeAsync("not a token at all")).StatusCode);

        var audit = await (await server.Client(await server.AdminTokenAsync()).GetAsync("/api/v1/audit?limit=500")).JsonAsync();
        var revocations = audit.GetProperty("events").EnumerateArray()
            .Where(e => e.GetProperty("event").GetString() == "token.revoked" && e.GetProperty("subject").GetString() == username).ToList();
        Assert.Single(revocations); // audited once, not for the repeat
        Assert.Contains("revocation_endpoint", revocations[0].GetProperty("details").GetRawText());
    }

    [Fact]
    public async Task AWrongTokenTypeHintStillRevokes()
    {
        var (_, _, userToken) = await server.CreateUserAsync();
        var token = await server.CreateTokenAsync(userToken, new { name = "hinted" });
        Assert.Equal(HttpStatusCode.OK, (await RevokeAsync(token, new KeyValuePair<string, string>("token_type_hint", "refresh_token"))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);
        var other = await server.CreateTokenAsync(userToken, new { name = "hinted-2" });
        Assert.Equal(HttpStatusCode.OK, (await RevokeAsync(other, new KeyValuePair<string, string>("token_type_hint", "no_such_type"))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(other).GetAsync("/api/v1/me")).StatusCode);
    }

    [Fact]
    public async Task ARevokedJwtFailsAtOnceAndStaysRevoked()
    {
        var (username, password, _) = await server.CreateUserAsync();
        var jwt = await server.LoginAsync(username, password);
        var other = await server.LoginAsync(username, password);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);

        Assert.Equal(HttpStatusCode.OK, (await RevokeAsync(jwt, new KeyValuePair<string, string>("token_type_hint", "access_token"))).StatusCode);
        using var rejected = await server.Client(jwt).GetAsync("/api/v1/me");
        Assert.Equal(HttpStatusCode.Unauthorized, rejected.StatusCode);
        Assert.Contains("invalid_token", rejected.Header("WWW-Authenticate"));
        // Only that token: the user's other JWT is untouched.
        Assert.Equal(HttpStatusCode.OK, (await server.Client(other).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await RevokeAsync(jwt)).StatusCode);

        var audit = await (await server.Client(await server.AdminTokenAsync()).GetAsync("/api/v1/audit?limit=500")).JsonAsync();
        var jti = (string?)Payload(jwt)["jti"];
        Assert.Single(audit.GetProperty("events").EnumerateArray(), e => e.GetProperty("event").GetString() == "token.revoked" && e.GetProperty("token_id").GetString() == jti);
    }

    [Fact]
    public async Task AClientCanRevokeItsTokensAndBadClientCredentialsAre401()
    {
        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["api"]);
        var jwt = await server.ClientTokenAsync(c);
        using var wrong = await server.PostFormAsync("/auth/revoke", [new("token", jwt)], Basic(c.ClientId, "pcc_wrong"));
        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        Assert.Equal("invalid_client", (await wrong.JsonAsync()).GetProperty("error").GetString());
        Assert.Equal(HttpStatusCode.OK, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);

        using var right = await server.PostFormAsync("/auth/revoke", [new("token", jwt)], Basic(c.ClientId, c.ClientSecret));
        Assert.Equal(HttpStatusCode.OK, right.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);
        // A public client names itself with client_id alone; that is not a failed authentication.
        var second = await server.ClientTokenAsync(c);
        using var publicClient = await server.PostFormAsync("/auth/revoke", [new("token", second), new("client_id", c.ClientId)]);
        Assert.Equal(HttpStatusCode.OK, publicClient.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(second).GetAsync("/api/v1/me")).StatusCode);
        using var missing = await server.PostFormAsync("/auth/revoke", [new("token_type_hint", "access_token")]);
        Assert.Equal(HttpStatusCode.BadRequest, missing.StatusCode);
        Assert.Equal("invalid_request", (await missing.JsonAsync()).GetProperty("error").GetString());
    }

    [Fact]
    public async Task RevokingAClientSecretStopsTheClientUntilItIsRotated()
    {
        var (_, _, userToken) = await server.CreateUserAsync();
        var c = await server.CreateClientAsync(userToken, ["api"]);
        var jwt = await server.ClientTokenAsync(c);
        Assert.Equal(HttpStatusCode.OK, (await RevokeAsync(c.ClientSecret)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.ClientCredentialsAsync(c)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);
        var listed = await (await server.Client(userToken).GetAsync($"/api/v1/clients/{c.ClientId}")).JsonAsync();
        Assert.Equal("revoked", listed.GetProperty("secret_status").GetString());

        var rotated = await (await server.Client(userToken).PostAsync($"/api/v1/clients/{c.ClientId}/rotate-secret", null)).JsonAsync();
        var secret = rotated.GetProperty("client_secret").GetString()!;
        PortcullisServer.Secrets.Add(secret);
        await server.ClientTokenAsync(c with { ClientSecret = secret });
    }
}

public sealed class SqliteIntrospectionTests(SqliteServer server) : IntrospectionTests(server), IClassFixture<SqliteServer>;

public sealed class PostgresIntrospectionTests(PostgresServer server) : IntrospectionTests(server), IClassFixture<PostgresServer>;

/// <summary>The JWT deny-list survives a restart: it is stored, and loaded before the server answers.</summary>
public sealed class RevocationPersistenceTests
{
    [Fact]
    public async Task ARevokedJwtStaysRevokedAfterARestart()
    {
        var dataDir = Directory.CreateTempSubdirectory("portcullis-revoke-").FullName;
        // A fixed public URL, so that the JWT's issuer is still this server's after it restarts on another port.
        await using var server = PortcullisServer.With(Provider.Sqlite, new() { ["DataDir"] = dataDir, ["PublicUrl"] = "http://portcullis.test" });
        await server.InitializeAsync();
        var revoked = await server.LoginAsync();
        var kept = await server.LoginAsync();
        Assert.Equal(HttpStatusCode.OK, (await server.PostFormAsync("/auth/revoke", [new("token", revoked)])).StatusCode);

        await server.StopAsync();
        await server.StartAsync();
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(revoked).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(kept).GetAsync("/api/v1/me")).StatusCode);
        await server.DisposeAsync();
        Directory.Delete(dataDir, recursive: true);
    }
}
