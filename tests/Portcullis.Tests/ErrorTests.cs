using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>Bad input of every kind gets a clear 4xx (RFC 9457 / RFC 6749 / RFC 6750), never a 5xx.</summary>
public abstract class ErrorTests(PortcullisServer server)
{
    [Fact]
    public async Task MissingCredentialIsA401WithTheBearerChallenge()
    {
        using var response = await server.Client().GetAsync("/api/v1/tokens");
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("Bearer realm=\"portcullis\"", response.Header("WWW-Authenticate"));
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    [Theory]
    [InlineData("Bearer", 400, "invalid_request")]
    [InlineData("Bearer ", 400, "invalid_request")]
    [InlineData("", 401, null)]
    [InlineData("Basic YWRtaW46YWRtaW4=", 401, null)]
    [InlineData("Bearer pcp_notavalidtoken", 401, "invalid_token")]
    [InlineData("Bearer pcp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 401, "invalid_token")]
    [InlineData("Bearer a.b.c", 401, "invalid_token")]
    [InlineData("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.", 401, "invalid_token")]
    [InlineData("Bearer two words", 401, "invalid_token")]
    [InlineData("Bearer pcp_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", 401, "invalid_token")]
    public async Task MalformedAuthorizationHeadersAreRejectedPrecisely(string header, int status, string? error)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/api/v1/me");
        request.Headers.TryAddWithoutValidation("Authorization", header);
        using var response = await server.Client().SendAsync(request);
        Assert.Equal(status, (int)response.StatusCode);
        var challenge = response.Header("WWW-Authenticate");
        Assert.StartsWith("Bearer realm=\"portcullis\"", challenge);
        if (error is not null)
            Assert.Contains($"error=\"{error}\"", challenge);
    }

    [Fact]
    public async Task UnknownWellFormedTokenIsRejected()
    {
        var body = "pcp_" + new string('x', 30);
        var token = body + TokensApiTests.Checksum(body);
        using var response = await server.Client(token).GetAsync("/api/v1/me");
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains("invalid_token", response.Header("WWW-Authenticate"));
    }

    [Fact]
    public async Task TwoAuthorizationHeadersAreAnInvalidRequest()
    {
        var token = await server.AdminTokenAsync();
        var (status, response) = await server.RawAsync(
            $"GET /api/v1/me HTTP/1.1\nHost: localhost\nAuthorization: Bearer {token}\nAuthorization: Bearer {token}\nConnection: close\n");
        Assert.Equal(400, status);
        Assert.Contains("error=\"invalid_request\"", response);
        // Non-ASCII bytes in the header are refused too, without a 5xx.
        var (latin1, _) = await server.RawAsync("GET /api/v1/me HTTP/1.1\nHost: localhost\nAuthorization: Bearer \u00fcn\u00efc\u00f6d\u00e9\nConnection: close\n");
        Assert.InRange(latin1, 400, 401);
    }

    [Fact]
    public async Task CredentialsInTheQueryStringAreIgnored()
    {
        var token = await server.AdminTokenAsync();
        using var response = await server.Client().GetAsync($"/api/v1/me?access_token={token}");
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Theory]
    [InlineData("{\"name\":\"a\",\"expires_in_days\":0}")]
    [InlineData("{\"name\":\"a\",\"expires_in_days\":-5}")]
    [InlineData("{\"name\":\"a\",\"expires_in_days\":99999999999999999999999}")]
    [InlineData("{\"name\":\"a\",\"expires_in_days\":9223372036854775807}")]
    [InlineData("{\"name\":\"a\",\"expires_in_days\":1.5}")]
    [InlineData("{\"name\":\"a\",\"expires_in_days\":\"ten\"}")]
    [InlineData("{\"name\":\"a\",\"expires_at\":\"2001-01-01\"}")]
    [InlineData("{\"name\":\"a\",\"expires_at\":\"tomorrow\"}")]
    [InlineData("{\"name\":\"a\",\"expires_at\":\"2030-01-01\",\"expires_in_days\":3}")]
    [InlineData("{\"name\":\"\"}")]
    [InlineData("{\"name\":\"   \"}")]
    [InlineData("{\"name\":\"tab\\there\"}")]
    [InlineData("{\"scopes\":[\"api\"]}")]
    [InlineData("{\"name\":\"a\",\"scopes\":[]}")]
    [InlineData("{\"name\":\"a\",\"scopes\":\"api\"}")]
    [InlineData("{\"name\":\"a\",\"scopes\":[\"services:UPPER\"]}")]
    [InlineData("{\"name\":\"a\",\"owner\":\"nobody-here\"}")]
    [InlineData("{\"name\":")]
    [InlineData("[1,2,3]")]
    [InlineData("null")]
    [InlineData("")]
    public async Task InvalidTokenRequestsAreBadRequests(string json)
    {
        using var client = server.Client(await server.AdminTokenAsync());
        using var response = await client.PostAsync("/api/v1/tokens", new StringContent(json, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var body = await response.Content.ReadAsStringAsync();
        Assert.DoesNotContain("   at ", body); // no stack trace
    }

    [Fact]
    public async Task OverlongNameAndDescriptionAreBadRequests()
    {
        using var client = server.Client(await server.AdminTokenAsync());
        var longName = await client.PostAsync("/api/v1/tokens", Json($"{{\"name\":\"{new string('n', 101)}\"}}"));
        Assert.Equal(HttpStatusCode.BadRequest, longName.StatusCode);
        var longDescription = await client.PostAsync("/api/v1/tokens", Json($"{{\"name\":\"d\",\"description\":\"{new string('d', 1001)}\"}}"));
        Assert.Equal(HttpStatusCode.BadRequest, longDescription.StatusCode);
        // Over the 1 MiB body limit: 413, or the connection is cut while sending; the server stays up either way.
        try
        {
            var hugeBody = await client.PostAsync("/api/v1/tokens", Json($"{{\"name\":\"d\",\"description\":\"{new string('d', 2_000_000)}\"}}"));
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, hugeBody.StatusCode);
        }
        catch (HttpRequestException)
        {
        }
        Assert.Equal(HttpStatusCode.OK, (await server.Client().GetAsync("/healthz")).StatusCode);
    }

    [Fact]
    public async Task InvalidUtf8AndWrongContentTypeAreRejectedCleanly()
    {
        using var client = server.Client(await server.AdminTokenAsync());
        var invalidUtf8 = new ByteArrayContent([(byte)'{', (byte)'"', (byte)'n', (byte)'a', (byte)'m', (byte)'e', (byte)'"', (byte)':', (byte)'"', 0xC3, 0x28, 0xFF, (byte)'"', (byte)'}']);
        invalidUtf8.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var utf8 = await client.PostAsync("/api/v1/tokens", invalidUtf8);
        Assert.Equal(HttpStatusCode.BadRequest, utf8.StatusCode);

        using var text = await client.PostAsync("/api/v1/tokens", new StringContent("{\"name\":\"x\"}", Encoding.UTF8, "text/plain"));
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, text.StatusCode);
        using var form = await client.PostAsync("/api/v1/tokens", new FormUrlEncodedContent([new("name", "x")]));
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, form.StatusCode);
    }

    [Fact]
    public async Task UnknownTokenIdsAndBadPathsAre404()
    {
        using var client = server.Client(await server.AdminTokenAsync());
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/api/v1/tokens/999999999")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/api/v1/tokens/not-a-number")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/api/v1/tokens/99999999999999999999999")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await client.GetAsync("/api/v1/tokens/1/usage?days=0")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await client.GetAsync("/api/v1/tokens/1/usage?days=abc")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await client.PostAsync("/api/v1/tokens/1/rotate", Json("{\"grace_seconds\":-1}"))).StatusCode);
    }

    [Theory]
    [InlineData("{\"username\":\"bad name\",\"password\":\"long-enough-1\"}")]
    [InlineData("{\"username\":\"ok-name\",\"password\":\"short\"}")]
    [InlineData("{\"username\":\"\",\"password\":\"long-enough-1\"}")]
    [InlineData("{\"password\":\"long-enough-1\"}")]
    public async Task InvalidUsersAreBadRequests(string json)
    {
        using var client = server.Client(await server.AdminTokenAsync());
        using var response = await client.PostAsync("/api/v1/users", Json(json));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
    }

    [Fact]
    public async Task DuplicateUserIsAConflictAndTheLastAdminIsProtected()
    {
        using var client = server.Client(await server.AdminTokenAsync());
        Assert.Equal(HttpStatusCode.Conflict, (await client.PostAsync("/api/v1/users", Json("{\"username\":\"ADMIN\",\"password\":\"long-enough-1\"}"))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/api/v1/users/nobody-at-all")).StatusCode);
        var users = await (await client.GetAsync("/api/v1/users")).JsonAsync();
        var admins = users.EnumerateArray().Count(u => u.GetProperty("admin").GetBoolean() && !u.GetProperty("disabled").GetBoolean());
        if (admins == 1)
            Assert.Equal(HttpStatusCode.Conflict, (await client.PatchAsync("/api/v1/users/admin", Json("{\"admin\":false}"))).StatusCode);
    }

    [Theory]
    [InlineData("application/json", "{\"username\":\"admin\",\"password\":\"wrong-password-x\"}", 400, "invalid_grant")]
    [InlineData("application/json", "{\"username\":\"no-such-user\",\"password\":\"wrong-password-x\"}", 400, "invalid_grant")]
    [InlineData("application/json", "{\"username\":\"admin\"}", 400, "invalid_request")]
    [InlineData("application/json", "{\"username\":\"admin\",\"password\":5}", 400, "invalid_request")]
    [InlineData("application/json", "{\"username\":\"admin\",\"username\":\"x\",\"password\":\"p\"}", 400, "invalid_request")]
    [InlineData("application/json", "{bad json", 400, "invalid_request")]
    [InlineData("application/json", "{\"grant_type\":\"authorization_code\",\"code\":\"x\"}", 400, "unsupported_grant_type")]
    [InlineData("application/x-www-form-urlencoded", "grant_type=password&username=admin&password=wrong-password-x", 400, "invalid_grant")]
    [InlineData("application/x-www-form-urlencoded", "grant_type=password&username=admin&username=x&password=y", 400, "invalid_request")]
    [InlineData("application/x-www-form-urlencoded", "grant_type=password&username=&password=y", 400, "invalid_request")]
    [InlineData("text/plain", "username=admin", 400, "invalid_request")]
    public async Task TokenEndpointErrorsFollowRfc6749(string contentType, string body, int status, string error)
    {
        using var content = new StringContent(body, Encoding.UTF8);
        content.Headers.ContentType = new MediaTypeHeaderValue(contentType);
        using var response = await server.Client().PostAsync("/auth/token", content);
        Assert.Equal(status, (int)response.StatusCode);
        Assert.Contains("no-store", response.Header("Cache-Control"));
        var json = await response.JsonAsync();
        Assert.Equal(error, json.GetProperty("error").GetString());
        Assert.False(string.IsNullOrEmpty(json.GetProperty("error_description").GetString()));
    }

    [Fact]
    public async Task WrongPasswordAndUnknownUserAnswerTheSame()
    {
        using var a = await server.Client().PostAsync("/auth/token", Json("{\"username\":\"admin\",\"password\":\"wrong-password-x\"}"));
        using var b = await server.Client().PostAsync("/auth/token", Json("{\"username\":\"nobody-xyz\",\"password\":\"wrong-password-x\"}"));
        Assert.Equal(await a.Content.ReadAsStringAsync(), await b.Content.ReadAsStringAsync());
        Assert.Equal(a.StatusCode, b.StatusCode);
    }

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");
}

public sealed class SqliteErrorTests(SqliteServer server) : ErrorTests(server), IClassFixture<SqliteServer>;

public sealed class PostgresErrorTests(PostgresServer server) : ErrorTests(server), IClassFixture<PostgresServer>;
