using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using Portcullis.Security;
using Portcullis.Tests.Infrastructure;
using static Portcullis.Tests.Infrastructure.OAuthHelpers;

namespace Portcullis.Tests;

public sealed class PasswordGrantOffServer() : PortcullisServer(Provider.Sqlite, new() { ["Auth:PasswordGrant"] = "false" });

/// <summary>docs/decisions.md: <c>/.well-known/openid-configuration</c> and the <c>Auth:PasswordGrant</c> switch.</summary>
public sealed class DiscoveryTests(SqliteServer server) : IClassFixture<SqliteServer>
{
    [Fact]
    public async Task DiscoveryNamesTheIssuerEndpointsGrantsAuthMethodsAndScopes()
    {
        using var response = await server.Client().GetAsync("/.well-known/openid-configuration");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var d = await response.JsonAsync();
        var issuer = server.BaseAddress.ToString().TrimEnd('/');
        Assert.Equal(issuer, d.GetProperty("issuer").GetString());
        Assert.Equal(issuer + "/auth/token", d.GetProperty("token_endpoint").GetString());
        Assert.Equal(issuer + "/.well-known/jwks.json", d.GetProperty("jwks_uri").GetString());
        Assert.Equal(issuer + "/auth/introspect", d.GetProperty("introspection_endpoint").GetString());
        Assert.Equal(issuer + "/auth/revoke", d.GetProperty("revocation_endpoint").GetString());
        Assert.Equal(issuer + "/auth/device", d.GetProperty("device_authorization_endpoint").GetString());
        Assert.Equal(["password", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code"], Strings(d, "grant_types_supported"));
        Assert.Equal(["client_secret_basic", "client_secret_post"], Strings(d, "token_endpoint_auth_methods_supported"));
        Assert.Equal(["client_secret_basic", "client_secret_post"], Strings(d, "introspection_endpoint_auth_methods_supported"));
        Assert.Equal(["api", "services", "admin"], Strings(d, "scopes_supported"));

        // The issuer in discovery is the one in the tokens, and the JWKS it points to verifies them.
        var jwt = await server.LoginAsync();
        Assert.Equal(issuer, (string?)Payload(jwt)["iss"]);
        var jwks = await (await server.Client().GetAsync(d.GetProperty("jwks_uri").GetString())).JsonAsync();
        var key = jwks.GetProperty("keys").EnumerateArray().Single(k => k.GetProperty("kid").GetString() == (string?)Header(jwt)["kid"]);
        Assert.Equal("EC", key.GetProperty("kty").GetString());
        Assert.Equal("ES256", key.GetProperty("alg").GetString());
        Assert.False(key.TryGetProperty("d", out _), "the JWKS must never carry the private key");
    }

    private static List<string> Strings(JsonElement e, string name) =>
        e.GetProperty(name).EnumerateArray().Select(x => x.GetString()!).ToList();
}

public sealed class PasswordGrantOffTests(PasswordGrantOffServer server) : IClassFixture<PasswordGrantOffServer>
{
    [Theory]
    [InlineData("/auth/token")]
    [InlineData("/auth/token/cli")]
    public async Task PasswordLoginThroughTheApiIsUnsupportedWithAHintToUseAnApiToken(string path)
    {
        using var client = server.Client();
        // Right password, JSON and form alike: the grant itself is off, so nothing is checked.
        foreach (var content in new HttpContent[]
        {
            JsonContent.Create(new { username = "admin", password = PortcullisServer.AdminPassword }),
            new FormUrlEncodedContent([new("grant_type", "password"), new("username", "admin"), new("password", PortcullisServer.AdminPassword)]),
        })
        {
            using var response = await client.PostAsync(path, content);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            var body = await response.JsonAsync();
            Assert.Equal("unsupported_grant_type", body.GetProperty("error").GetString());
            Assert.Contains("API token", body.GetProperty("error_description").GetString());
            Assert.Contains("web UI", body.GetProperty("error_description").GetString());
        }
    }

    [Fact]
    public async Task ClientCredentialsAndApiTokensStillWorkAndDiscoveryNoLongerOffersThePasswordGrant()
    {
        // No password login through the API: the admin's token is put in the database as the web UI would create it.
        var adminToken = await SeedAdminTokenAsync();
        Assert.Equal(HttpStatusCode.OK, (await server.Client(adminToken).GetAsync("/api/v1/me")).StatusCode);
        var c = await server.CreateClientAsync(adminToken, ["api"]);
        var jwt = await server.ClientTokenAsync(c);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);

        var d = await (await server.Client().GetAsync("/.well-known/openid-configuration")).JsonAsync();
        Assert.Equal(["client_credentials", "urn:ietf:params:oauth:grant-type:device_code"], d.GetProperty("grant_types_supported").EnumerateArray().Select(x => x.GetString()));
    }

    private async Task<string> SeedAdminTokenAsync()
    {
        var format = new TokenFormat("pc");
        var token = format.Generate(TokenKind.Personal);
        PortcullisServer.Secrets.Add(token);
        await using var connection = new SqliteConnection($"Data Source={Path.Combine(server.DataDir, "data", "portcullis.db")}");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = "INSERT INTO api_tokens (owner_id, name, token_hash, hint, scopes, created_at) " +
            "SELECT id, 'seeded', $hash, $hint, 'api services admin', $now FROM users WHERE username = 'admin'";
        command.Parameters.AddWithValue("$hash", TokenFormat.Digest(token).ToHex());
        command.Parameters.AddWithValue("$hint", format.Hint(token));
        command.Parameters.AddWithValue("$now", DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm:ss.FFFFFFF"));
        Assert.Equal(1, await command.ExecuteNonQueryAsync());
        return token;
    }
}
