using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;
using static Portcullis.Tests.Infrastructure.OAuthHelpers;

namespace Portcullis.Tests;

/// <summary>
/// docs/decisions.md OAuth clients and <c>grant_type=client_credentials</c> : the REST
/// API, client authentication by HTTP Basic or the body, and the tokens a client gets.
/// </summary>
public abstract class OAuthClientTests(PortcullisServer server)
{
    [Fact]
    public async Task AClientsTokenCannotCreateOrChangeAnyCredentialButMayReadAndRevoke()
    {
        var admin = await server.AdminTokenAsync();
        var sibling = await server.CreateClientAsync(admin, ["services"]);
        var jwt = await server.ClientTokenAsync(await server.CreateClientAsync(admin, ["api", "services", "admin"]));
        using var client = server.Client(jwt);
        var victim = await server.CreateTokenAsync(admin, new { name = "victim-" + Guid.NewGuid().ToString("N")[..6] });
        using var adminClient = server.Client(admin);
        var victimId = (await (await server.Client(victim).GetAsync("/api/v1/me")).JsonAsync()).GetProperty("auth").GetProperty("token_id").GetString();

        var refused = new (HttpMethod Method, string Path, object? Body)[]
        {
            (HttpMethod.Post, "/api/v1/tokens", new { name = "persistent" }),
            (HttpMethod.Post, $"/api/v1/tokens/{victimId}/rotate", new { }),
            (HttpMethod.Post, "/api/v1/clients", new { name = "child", scopes = new[] { "services" } }),
            (HttpMethod.Post, $"/api/v1/clients/{sibling.ClientId}/rotate-secret", null),
            (HttpMethod.Delete, $"/api/v1/clients/{sibling.ClientId}", null),
            (HttpMethod.Post, "/api/v1/users", new { username = "made-by-client", password = "a-long-password-1", admin = true }),
            (HttpMethod.Patch, "/api/v1/users/admin", new { password = "taken-over-password-1" }),
            (HttpMethod.Post, "/api/v1/me/password", new { current_password = "x", new_password = "y-long-password-1" }),
            (HttpMethod.Post, "/api/v1/keys/rotate", null),
        };
        foreach (var (method, path, body) in refused)
        {
            using var request = new HttpRequestMessage(method, path) { Content = body is null ? null : JsonContent.Create(body) };
            using var response = await client.SendAsync(request);
            Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{method} {path}: {(int)response.StatusCode}");
            Assert.Contains("outlive the client", await response.Content.ReadAsStringAsync());
        }
        // Reading within its scopes, and taking access away, remain.
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/v1/tokens?all=true")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/v1/tokens/{victimId}")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(victim).GetAsync("/api/v1/me")).StatusCode);
    }

    [Theory]
    [InlineData("application/x-www-form-urlencoded")]
    [InlineData("application/x-www-form-urlencoded; charset=UTF-8")]
    [InlineData("multipart/form-data")]
    public async Task ClientCredentialsAreReadFromAFormHoweverItIsEncoded(string contentType)
    {
        // A plain urlencoded body is parsed straight from the request; the other two through the framework's form feature.
        var credentials = await server.CreateClientAsync(await server.AdminTokenAsync(), ["services"]);
        HttpContent Form(string secret)
        {
            KeyValuePair<string, string>[] fields = [new("grant_type", "client_credentials"), new("client_id", credentials.ClientId), new("client_secret", secret)];
            if (contentType.StartsWith("multipart/", StringComparison.Ordinal))
            {
                var multipart = new MultipartFormDataContent();
                foreach (var (name, value) in fields)
                    multipart.Add(new StringContent(value), name);
                return multipart;
            }
            var form = new FormUrlEncodedContent(fields);
            form.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
            return form;
        }

        using var anonymous = server.Client();
        using var issued = await anonymous.PostAsync("/auth/token", Form(credentials.ClientSecret));
        Assert.Equal(HttpStatusCode.OK, issued.StatusCode);
        var jwt = (await issued.JsonAsync()).GetProperty("access_token").GetString()!;
        PortcullisServer.Secrets.Add(jwt);
        Assert.Equal(credentials.ClientId, Payload(jwt)["client_id"]!.GetValue<string>());

        using var refused = await anonymous.PostAsync("/auth/token", Form(Tampering.LastCharacterChanged(credentials.ClientSecret)));
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        var error = await refused.JsonAsync();
        Assert.Equal("invalid_client", error.GetProperty("error").GetString());
        Assert.Equal("The client is unknown or the client secret is wrong.", error.GetProperty("error_description").GetString());
    }

    [Fact]
    public async Task ThePasswordGrantVerifiesPresentedClientCredentialsAndNamesTheClient()
    {
        using var anonymous = server.Client();
        FormUrlEncodedContent Form() => new([new("grant_type", "password"), new("username", "admin"), new("password", PortcullisServer.AdminPassword)]);

        using (var request = new HttpRequestMessage(HttpMethod.Post, "/auth/token") { Content = Form() })
        {
            request.Headers.Authorization = BasicRaw("client-doesnotexist:pcc_wrong");
            using var refused = await anonymous.SendAsync(request);
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
            Assert.Equal("invalid_client", (await refused.JsonAsync()).GetProperty("error").GetString());
        }

        var credentials = await server.CreateClientAsync(await server.AdminTokenAsync(), ["services"]);
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/auth/token") { Content = Form() })
        {
            request.Headers.Authorization = Basic(credentials.ClientId, credentials.ClientSecret);
            using var issued = await anonymous.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, issued.StatusCode);
            var jwt = (await issued.JsonAsync()).GetProperty("access_token").GetString()!;
            PortcullisServer.Secrets.Add(jwt);
            Assert.Equal(credentials.ClientId, Payload(jwt)["client_id"]!.GetValue<string>());
            Assert.Equal("admin", Payload(jwt)["sub"]!.GetValue<string>());
            // It is the person's token, with the person's rights, not the client's.
            var me = await (await server.Client(jwt).GetAsync("/api/v1/me")).JsonAsync();
            Assert.Equal("admin", me.GetProperty("username").GetString());
            Assert.Equal(HttpStatusCode.Created, (await server.Client(jwt).PostAsJsonAsync("/api/v1/tokens", new { name = "by-person-" + Guid.NewGuid().ToString("N")[..6] })).StatusCode);
        }
    }

    [Fact]
    public async Task AClientsTokenStaysDeadWhenItsOwnerIsDisabledAndEnabledAgain()
    {
        var (username, _, token) = await server.CreateUserAsync();
        var credentials = await server.CreateClientAsync(token, ["api", "services"]);
        var before = await server.ClientTokenAsync(credentials);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(before).GetAsync("/api/v1/me")).StatusCode);
        using var admin = server.Client(await server.AdminTokenAsync());
        Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { disabled = true })).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(before).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { disabled = false })).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(before).GetAsync("/api/v1/me")).StatusCode);
        // A token the client asks for now works: the client itself was not disabled.
        Assert.Equal(HttpStatusCode.OK, (await server.Client(await server.ClientTokenAsync(credentials)).GetAsync("/api/v1/me")).StatusCode);
    }

    [Fact]
    public async Task CreatingAClientShowsItsSecretOnceInPccFormat()
    {
        var admin = await server.AdminTokenAsync();
        using var client = server.Client(admin);
        using var response = await client.PostAsJsonAsync("/api/v1/clients", new { name = "shown-once", scopes = new[] { "services" } });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Contains("no-store", response.Header("Cache-Control"));
        var body = await response.JsonAsync();
        var secret = body.GetProperty("client_secret").GetString()!;
        PortcullisServer.Secrets.Add(secret);
        var clientId = body.GetProperty("client_id").GetString()!;
        Assert.Matches("^pcc_[0-9A-Za-z]{36}$", secret);
        Assert.Equal(TokensApiTests.Checksum(secret[..34]), secret[34..]);
        Assert.Matches("^client-[0-9a-z]{20}$", clientId);
        Assert.Equal(["services"], body.GetProperty("scopes").EnumerateArray().Select(s => s.GetString()));
        Assert.Equal("admin", body.GetProperty("owner").GetString());
        Assert.Equal($"/api/v1/clients/{clientId}", response.Headers.Location?.OriginalString);

        // Listing and reading never show the secret again.
        var listed = await (await client.GetAsync("/api/v1/clients")).Content.ReadAsStringAsync();
        var single = await (await client.GetAsync($"/api/v1/clients/{clientId}")).Content.ReadAsStringAsync();
        foreach (var text in new[] { listed, single })
        {
            Assert.Contains(clientId, text);
            Assert.DoesNotContain(secret, text);
            Assert.DoesNotContain("client_secret", text);
            Assert.Contains(secret[..8] + "…", text); // the hint
        }
    }

    [Fact]
    public async Task ClientScopesCannotExceedTheCreatorsRights()
    {
        var (_, _, userToken) = await server.CreateUserAsync();
        using var user = server.Client(userToken);
        var tooMuch = await user.PostAsJsonAsync("/api/v1/clients", new { name = "greedy", scopes = new[] { "admin" } });
        Assert.Equal(HttpStatusCode.BadRequest, tooMuch.StatusCode);
        Assert.Equal("application/problem+json", tooMuch.Content.Headers.ContentType?.MediaType);

        // The creating credential bounds the client too: an api-only token cannot grant services.
        var apiOnly = await server.CreateTokenAsync(userToken, new { name = "api-only", scopes = new[] { "api" } });
        var beyondCredential = await server.Client(apiOnly).PostAsJsonAsync("/api/v1/clients", new { name = "wider", scopes = new[] { "services" } });
        Assert.Equal(HttpStatusCode.BadRequest, beyondCredential.StatusCode);

        foreach (var json in new[] { "{\"name\":\"x\"}", "{\"name\":\"x\",\"scopes\":[]}", "{\"scopes\":[\"api\"]}", "{\"name\":\"x\",\"scopes\":[\"bogus\"]}", "null" })
        {
            var bad = await user.PostAsync("/api/v1/clients", new StringContent(json, Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        }
    }

    [Fact]
    public async Task ClientNamesAreUniquePerOwner()
    {
        var (_, _, aliceToken) = await server.CreateUserAsync();
        var (_, _, bobToken) = await server.CreateUserAsync();
        await server.CreateClientAsync(aliceToken, ["services"], "deployer");
        var again = await server.Client(aliceToken).PostAsJsonAsync("/api/v1/clients", new { name = "deployer", scopes = new[] { "api" } });
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
        await server.CreateClientAsync(bobToken, ["services"], "deployer"); // another owner may use the name
    }

    [Fact]
    public async Task UsersSeeTheirOwnClientsAndAdminsSeeAll()
    {
        var (alice, _, aliceToken) = await server.CreateUserAsync();
        var (_, _, bobToken) = await server.CreateUserAsync();
        var alices = await server.CreateClientAsync(aliceToken, ["services"]);
        var bobs = await server.CreateClientAsync(bobToken, ["api"]);

        using var asAlice = server.Client(aliceToken);
        var list = await (await asAlice.GetAsync("/api/v1/clients")).JsonAsync();
        Assert.Equal([alices.ClientId], list.EnumerateArray().Select(c => c.GetProperty("client_id").GetString()));
        // Someone else's client does not exist, whatever one tries to do with it.
        Assert.Equal(HttpStatusCode.NotFound, (await asAlice.GetAsync($"/api/v1/clients/{bobs.ClientId}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await asAlice.DeleteAsync($"/api/v1/clients/{bobs.ClientId}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await asAlice.PostAsync($"/api/v1/clients/{bobs.ClientId}/rotate-secret", null)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await asAlice.GetAsync("/api/v1/clients?owner=admin")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await asAlice.GetAsync("/api/v1/clients/not-a-client-id")).StatusCode);
        await server.ClientTokenAsync(bobs); // untouched

        using var admin = server.Client(await server.AdminTokenAsync());
        var all = (await (await admin.GetAsync("/api/v1/clients")).JsonAsync()).EnumerateArray().Select(c => c.GetProperty("client_id").GetString()).ToList();
        Assert.Contains(alices.ClientId, all);
        Assert.Contains(bobs.ClientId, all);
        var onlyAlice = await (await admin.GetAsync($"/api/v1/clients?owner={alice}")).JsonAsync();
        Assert.Equal([alices.ClientId], onlyAlice.EnumerateArray().Select(c => c.GetProperty("client_id").GetString()));
        Assert.Equal(alice, onlyAlice[0].GetProperty("owner").GetString());
        Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync($"/api/v1/clients/{alices.ClientId}")).StatusCode);
    }

    [Fact]
    public async Task ClientCredentialsGrantIssuesAJwtWhoseSubjectIsTheClient()
    {
        var (username, _, userToken) = await server.CreateUserAsync();
        var credentials = await server.CreateClientAsync(userToken, ["services"]);
        using var response = await server.ClientCredentialsAsync(credentials);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("no-store", response.Header("Cache-Control"));
        var body = await response.JsonAsync();
        var jwt = body.GetProperty("access_token").GetString()!;
        PortcullisServer.Secrets.Add(jwt);
        Assert.Equal("Bearer", body.GetProperty("token_type").GetString());
        Assert.Equal(3600, body.GetProperty("expires_in").GetInt32());
        Assert.Equal("services", body.GetProperty("scope").GetString());
        Assert.False(body.TryGetProperty("refresh_token", out _));

        var payload = Payload(jwt);
        Assert.Equal(credentials.ClientId, (string?)payload["sub"]);
        Assert.Equal(credentials.ClientId, (string?)payload["client_id"]);
        Assert.Equal("services", (string?)payload["scope"]);
        Assert.Equal("at+jwt", (string?)Header(jwt)["typ"]);

        // The token acts for the client's owner.
        var me = await (await server.Client(jwt).GetAsync("/api/v1/me")).JsonAsync();
        Assert.Equal(username, me.GetProperty("username").GetString());
        Assert.Equal("jwt", me.GetProperty("auth").GetProperty("kind").GetString());
        Assert.Equal(credentials.ClientId, me.GetProperty("auth").GetProperty("client_id").GetString());
        // services only: the management API is out of reach.
        Assert.Equal(HttpStatusCode.Forbidden, (await server.Client(jwt).GetAsync("/api/v1/tokens")).StatusCode);

        // Client tokens get the access-token lifetime on the CLI endpoint as well.
        using var cli = await server.ClientCredentialsAsync(credentials, path: "/auth/token/cli");
        var cliBody = await cli.JsonAsync();
        PortcullisServer.Secrets.Add(cliBody.GetProperty("access_token").GetString()!);
        Assert.Equal(3600, cliBody.GetProperty("expires_in").GetInt32());
    }

    [Fact]
    public async Task ClientCredentialsInTheBodyWorkAsFormAndJson()
    {
        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["api"]);
        using var form = await server.PostFormAsync("/auth/token",
            [new("grant_type", "client_credentials"), new("client_id", c.ClientId), new("client_secret", c.ClientSecret)]);
        Assert.Equal(HttpStatusCode.OK, form.StatusCode);
        PortcullisServer.Secrets.Add((await form.JsonAsync()).GetProperty("access_token").GetString()!);
        using var json = await server.Client().PostAsJsonAsync("/auth/token",
            new { grant_type = "client_credentials", client_id = c.ClientId, client_secret = c.ClientSecret });
        // JSON is Airflow's form of the request, answered Airflow's way (docs/decisions.md, "Token endpoint answers").
        Assert.Equal(HttpStatusCode.Created, json.StatusCode);
        PortcullisServer.Secrets.Add((await json.JsonAsync()).GetProperty("access_token").GetString()!);
    }

    [Fact]
    public async Task BasicCredentialsAreFormUrlDecoded()
    {
        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["api"]);
        // Every character percent-encoded: only a server that form-decodes the Basic parts gets the secret right.
        static string EncodeAll(string s) => string.Concat(Encoding.UTF8.GetBytes(s).Select(b => $"%{b:X2}"));
        using var encoded = await Grant(BasicRaw(EncodeAll(c.ClientId) + ":" + EncodeAll(c.ClientSecret)));
        Assert.Equal(HttpStatusCode.OK, encoded.StatusCode);
        PortcullisServer.Secrets.Add((await encoded.JsonAsync()).GetProperty("access_token").GetString()!);
        // Plain text works too (nothing in an id or a pcc_ secret needs encoding).
        using var plain = await Grant(BasicRaw(c.ClientId + ":" + c.ClientSecret));
        Assert.Equal(HttpStatusCode.OK, plain.StatusCode);
        PortcullisServer.Secrets.Add((await plain.JsonAsync()).GetProperty("access_token").GetString()!);

        // Secrets with ':' and '%' are read whole (the first ':' separates), and merely wrong.
        foreach (var wrong in new[] { c.ClientSecret + ":extra", "pcc_%41:%zz%", "100%:sure" })
        {
            using var response = await Grant(Basic(c.ClientId, wrong));
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.Equal("invalid_client", (await response.JsonAsync()).GetProperty("error").GetString());
            using var raw = await Grant(BasicRaw(c.ClientId + ":" + wrong));
            Assert.Equal(HttpStatusCode.Unauthorized, raw.StatusCode);
        }

        Task<HttpResponseMessage> Grant(AuthenticationHeaderValue basic) =>
            server.PostFormAsync("/auth/token", [new("grant_type", "client_credentials")], basic);
    }

    [Fact]
    public async Task BasicAndBodyCredentialsTogetherAreAnInvalidRequest()
    {
        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["api"]);
        using var both = await server.PostFormAsync("/auth/token",
            [new("grant_type", "client_credentials"), new("client_id", c.ClientId), new("client_secret", c.ClientSecret)], Basic(c.ClientId, c.ClientSecret));
        Assert.Equal(HttpStatusCode.BadRequest, both.StatusCode);
        Assert.Equal("invalid_request", (await both.JsonAsync()).GetProperty("error").GetString());
        using var idInBody = await server.PostFormAsync("/auth/token",
            [new("grant_type", "client_credentials"), new("client_id", c.ClientId)], Basic(c.ClientId, c.ClientSecret));
        Assert.Equal(HttpStatusCode.BadRequest, idInBody.StatusCode);
        using var malformed = await server.PostFormAsync("/auth/token", [new("grant_type", "client_credentials")], new AuthenticationHeaderValue("Basic", "%%%not-base64"));
        Assert.Equal(HttpStatusCode.BadRequest, malformed.StatusCode);
        Assert.Equal("invalid_request", (await malformed.JsonAsync()).GetProperty("error").GetString());
        using var noColon = await server.PostFormAsync("/auth/token", [new("grant_type", "client_credentials")], BasicRaw(c.ClientId));
        Assert.Equal(HttpStatusCode.BadRequest, noColon.StatusCode);
    }

    [Fact]
    public async Task BadClientCredentialsAre401InvalidClientWithAChallengeForTheSchemeUsed()
    {
        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["api"]);
        var otherSecret = "pcc_" + new string('x', 30);
        otherSecret += TokensApiTests.Checksum(otherSecret);
        var attempts = new List<Task<HttpResponseMessage>>
        {
            server.PostFormAsync("/auth/token", [new("grant_type", "client_credentials")], Basic(c.ClientId, otherSecret)),
            server.PostFormAsync("/auth/token", [new("grant_type", "client_credentials")], Basic(c.ClientId, "not-a-secret")),
            server.PostFormAsync("/auth/token", [new("grant_type", "client_credentials")], Basic("client-aaaaaaaaaaaaaaaaaaaa", c.ClientSecret)),
            server.PostFormAsync("/auth/token", [new("grant_type", "client_credentials")], Basic("nobody", c.ClientSecret)),
            server.PostFormAsync("/auth/token", [new("grant_type", "client_credentials"), new("client_id", c.ClientId), new("client_secret", otherSecret)]),
            server.PostFormAsync("/auth/token", [new("grant_type", "client_credentials"), new("client_id", c.ClientId)]),
            server.PostFormAsync("/auth/token", [new("grant_type", "client_credentials")]),
        };
        var bodies = new List<string>();
        foreach (var attempt in attempts)
        {
            using var response = await attempt;
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.StartsWith("Basic realm=\"portcullis\"", response.Header("WWW-Authenticate"));
            Assert.Contains("no-store", response.Header("Cache-Control"));
            var body = await response.JsonAsync();
            bodies.Add(body.GetRawText());
            Assert.Equal("invalid_client", body.GetProperty("error").GetString());
            Assert.False(string.IsNullOrEmpty(body.GetProperty("error_description").GetString()));
        }
        // Unknown client and wrong secret answer the same.
        Assert.Equal(bodies[2], bodies[0]);
    }

    [Theory]
    [InlineData("grant_type=client_credentials&grant_type=client_credentials")]
    [InlineData("grant_type=client_credentials&scope=api&scope=services")]
    public async Task DuplicateParametersAreAnInvalidRequest(string body)
    {
        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["api"]);
        using var client = server.Client();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/auth/token") { Content = new StringContent(body, Encoding.UTF8, "application/x-www-form-urlencoded") };
        request.Headers.Authorization = Basic(c.ClientId, c.ClientSecret);
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", (await response.JsonAsync()).GetProperty("error").GetString());
    }

    [Fact]
    public async Task EmptyParametersCountAsAbsent()
    {
        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["api", "services"]);
        // An empty scope is no scope: the client's own scopes.
        using var emptyScope = await server.PostFormAsync("/auth/token", [new("grant_type", "client_credentials"), new("scope", "")], Basic(c.ClientId, c.ClientSecret));
        Assert.Equal(HttpStatusCode.OK, emptyScope.StatusCode);
        var body = await emptyScope.JsonAsync();
        PortcullisServer.Secrets.Add(body.GetProperty("access_token").GetString()!);
        Assert.Equal("api services", body.GetProperty("scope").GetString());
        // An empty client_secret in the body is a missing one.
        using var emptySecret = await server.PostFormAsync("/auth/token",
            [new("grant_type", "client_credentials"), new("client_id", c.ClientId), new("client_secret", "")]);
        Assert.Equal(HttpStatusCode.Unauthorized, emptySecret.StatusCode);
        // An empty grant_type is the default (password), which then misses its username.
        using var emptyGrant = await server.PostFormAsync("/auth/token", [new("grant_type", ""), new("password", "x")]);
        Assert.Equal("invalid_request", (await emptyGrant.JsonAsync()).GetProperty("error").GetString());
    }

    [Theory]
    [InlineData("/auth/token")]
    [InlineData("/auth/token/cli")]
    [InlineData("/auth/introspect")]
    [InlineData("/auth/revoke")]
    public async Task OAuthEndpointsAnswerGetWith405(string path)
    {
        using var response = await server.Client().GetAsync(path);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        Assert.Equal("POST", response.Header("Allow"));
        Assert.Equal("invalid_request", (await response.JsonAsync()).GetProperty("error").GetString());
    }

    [Fact]
    public async Task UnknownGrantTypesAreUnsupported()
    {
        foreach (var grant in new[] { "authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer", "CLIENT_CREDENTIALS" })
        {
            using var response = await server.PostFormAsync("/auth/token", [new("grant_type", grant)]);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Equal("unsupported_grant_type", (await response.JsonAsync()).GetProperty("error").GetString());
        }
    }

    [Fact]
    public async Task ScopeParameterNarrowsAClientTokenButCannotWidenIt()
    {
        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["api", "services:grafana"]);
        using var narrowed = await server.ClientCredentialsAsync(c, "services:grafana");
        var body = await narrowed.JsonAsync();
        PortcullisServer.Secrets.Add(body.GetProperty("access_token").GetString()!);
        Assert.Equal("services:grafana", body.GetProperty("scope").GetString());
        foreach (var scope in new[] { "services", "admin", "services:other", "nonsense" })
        {
            using var widened = await server.ClientCredentialsAsync(c, scope);
            Assert.Equal(HttpStatusCode.BadRequest, widened.StatusCode);
            Assert.Equal("invalid_scope", (await widened.JsonAsync()).GetProperty("error").GetString());
        }
    }

    [Fact]
    public async Task AClientsTokensNeverExceedItsOwnersCurrentRights()
    {
        var (username, password, _) = await server.CreateUserAsync(admin: true);
        var ownerJwt = await server.LoginAsync(username, password);
        var c = await server.CreateClientAsync(ownerJwt, ["api", "admin"]);
        var before = await server.ClientTokenAsync(c);
        Assert.Equal("api admin", (string?)Payload(before)["scope"]);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(before).GetAsync("/api/v1/users")).StatusCode);

        using var admin = server.Client(await server.AdminTokenAsync());
        Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { admin = false })).StatusCode);
        // The token already issued loses admin at once; a new one is issued without it ('admin' held
        // everything, so what remains is everything the owner still holds).
        Assert.Equal(HttpStatusCode.Forbidden, (await server.Client(before).GetAsync("/api/v1/users")).StatusCode);
        var after = await server.ClientTokenAsync(c);
        Assert.Equal("api services", (string?)Payload(after)["scope"]);
        // Asking for admin by name gets what is left of it, never admin itself.
        var asked = await server.ClientTokenAsync(c, "admin");
        Assert.Equal("api services", (string?)Payload(asked)["scope"]);
        Assert.Equal(HttpStatusCode.Forbidden, (await server.Client(asked).GetAsync("/api/v1/users")).StatusCode);
    }

    [Fact]
    public async Task DeletingAClientEndsItsSecretAndItsTokensAtOnce()
    {
        var (_, _, userToken) = await server.CreateUserAsync();
        var c = await server.CreateClientAsync(userToken, ["api"]);
        var jwt = await server.ClientTokenAsync(c);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);

        Assert.Equal(HttpStatusCode.NoContent, (await server.Client(userToken).DeleteAsync($"/api/v1/clients/{c.ClientId}")).StatusCode);
        using var rejected = await server.Client(jwt).GetAsync("/api/v1/me");
        Assert.Equal(HttpStatusCode.Unauthorized, rejected.StatusCode);
        Assert.Contains("error=\"invalid_token\"", rejected.Header("WWW-Authenticate"));
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.ClientCredentialsAsync(c)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await server.Client(userToken).DeleteAsync($"/api/v1/clients/{c.ClientId}")).StatusCode);

        var audit = await (await server.Client(await server.AdminTokenAsync()).GetAsync("/api/v1/audit?limit=200")).JsonAsync();
        var events = audit.GetProperty("events").EnumerateArray()
            .Where(e => e.GetProperty("details").GetRawText().Contains(c.ClientId)).Select(e => e.GetProperty("event").GetString()).ToList();
        Assert.Contains("client.created", events);
        Assert.Contains("client.deleted", events);
    }

    [Fact]
    public async Task RotatingTheSecretEndsTheOldSecretAndItsTokens()
    {
        var (_, _, userToken) = await server.CreateUserAsync();
        var c = await server.CreateClientAsync(userToken, ["api"]);
        var jwt = await server.ClientTokenAsync(c);

        using var response = await server.Client(userToken).PostAsync($"/api/v1/clients/{c.ClientId}/rotate-secret", null);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("no-store", response.Header("Cache-Control"));
        var body = await response.JsonAsync();
        var newSecret = body.GetProperty("client_secret").GetString()!;
        PortcullisServer.Secrets.Add(newSecret);
        Assert.Equal(c.ClientId, body.GetProperty("client_id").GetString());
        Assert.NotEqual(c.ClientSecret, newSecret);

        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.ClientCredentialsAsync(c)).StatusCode);
        var fresh = await server.ClientTokenAsync(c with { ClientSecret = newSecret });
        Assert.Equal(HttpStatusCode.OK, (await server.Client(fresh).GetAsync("/api/v1/me")).StatusCode);
    }

    [Fact]
    public async Task DisablingTheOwnerStopsTheClientAndItsTokens()
    {
        var (username, _, userToken) = await server.CreateUserAsync();
        var c = await server.CreateClientAsync(userToken, ["api"]);
        var jwt = await server.ClientTokenAsync(c);
        using var admin = server.Client(await server.AdminTokenAsync());
        Assert.Equal(HttpStatusCode.OK, (await admin.PatchAsJsonAsync($"/api/v1/users/{username}", new { disabled = true })).StatusCode);

        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(jwt).GetAsync("/api/v1/me")).StatusCode);
        using var grant = await server.ClientCredentialsAsync(c);
        Assert.Equal(HttpStatusCode.Unauthorized, grant.StatusCode);
        Assert.Equal("invalid_client", (await grant.JsonAsync()).GetProperty("error").GetString());
    }

    [Fact]
    public async Task ClientTokensCannotCreateClients()
    {
        var c = await server.CreateClientAsync(await server.AdminTokenAsync(), ["api"]);
        var jwt = await server.ClientTokenAsync(c);
        var response = await server.Client(jwt).PostAsJsonAsync("/api/v1/clients", new { name = "child", scopes = new[] { "api" } });
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
    }

    [Fact]
    public void BasicHeaderParsingFollowsRfc6749()
    {
        var context = new Microsoft.AspNetCore.Http.DefaultHttpContext();
        context.Request.Headers.Authorization = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("my%3Aid:se%3Acr%25et+x"));
        var (method, id, secret, error) = Portcullis.OAuth.ClientAuthenticator.Read(context.Request, new Dictionary<string, string>());
        Assert.Null(error);
        Assert.Equal(Portcullis.OAuth.ClientAuthMethod.Basic, method);
        Assert.Equal("my:id", id);
        Assert.Equal("se:cr%et x", secret);
    }
}

public sealed class SqliteOAuthClientTests(SqliteServer server) : OAuthClientTests(server), IClassFixture<SqliteServer>;

public sealed class PostgresOAuthClientTests(PostgresServer server) : OAuthClientTests(server), IClassFixture<PostgresServer>;
