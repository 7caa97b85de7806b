using System.Net;
using System.Net.Http.Json;
using Portcullis.Security;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>A server that checks at most one unknown token digest per second in its database.</summary>
public sealed class FrugalLookupsServer() : PortcullisServer(Provider.Sqlite, new() { ["Tokens:UnknownTokenLookupsPerSecond"] = "1" });

/// <summary>
/// docs/decisions.md, "Under a flood": random well-formed tokens are refused from memory (the set of existing
/// tokens), so a flood of them costs no database reads; tokens created meanwhile work at once.
/// </summary>
public sealed class RandomTokenFloodTests(FrugalLookupsServer server) : IClassFixture<FrugalLookupsServer>
{
    [Fact]
    public async Task UnderAFloodOfRandomTokensANewTokenWorksAtOnce()
    {
        var admin = await server.AdminTokenAsync();
        var format = new TokenFormat("pc");
        using var anonymous = server.Client();
        // Far more unknown digests than the budget of one per second: all refused, precisely.
        for (var i = 0; i < 50; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/api/v1/me");
            request.Headers.Authorization = new("Bearer", format.Generate(TokenKind.Personal));
            using var response = await anonymous.SendAsync(request);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.Contains("invalid_token", response.Headers.WwwAuthenticate.ToString());
        }
        // The budget is spent; a token made now is known to the set at once, and works on its first use.
        for (var i = 0; i < 3; i++)
        {
            var fresh = await server.CreateTokenAsync(admin, new { name = "fresh-" + i });
            Assert.Equal(HttpStatusCode.OK, (await server.Client(fresh).GetAsync("/api/v1/me")).StatusCode);
        }
        // A rotation's successor too.
        using var adminClient = server.Client(admin);
        var victim = await (await adminClient.PostAsJsonAsync("/api/v1/tokens", new { name = "to-rotate" })).JsonAsync();
        PortcullisServer.Secrets.Add(victim.GetProperty("token").GetString()!);
        using var rotated = await adminClient.PostAsJsonAsync($"/api/v1/tokens/{victim.GetProperty("id")}/rotate", new { });
        var successor = (await rotated.JsonAsync()).GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(successor);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(successor).GetAsync("/api/v1/me")).StatusCode);
    }
}
