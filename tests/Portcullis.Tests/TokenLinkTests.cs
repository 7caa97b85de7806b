using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using Microsoft.Playwright;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// Handing a token over as a one-time link (docs/token-policies.md): the link reveals the token once, to whoever opens
/// it first; the creator sees that it was opened; a link nobody opened ends with its token.
/// </summary>
public sealed class TokenLinkTests(SqliteServer server, BrowserFixture browser) : IClassFixture<SqliteServer>, IClassFixture<BrowserFixture>
{
    private async Task<(long Id, string ClaimUrl)> HandOverAsync(HttpClient admin, object? extra = null, string? owner = null)
    {
        var created = await admin.PostAsJsonAsync("/api/v1/tokens", new { name = "handed-" + Guid.NewGuid().ToString("N")[..6], owner, deliver = "link", link_expires_in_minutes = 30 });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var body = await created.JsonAsync();
        Assert.Equal(JsonValueKind.Null, body.GetProperty("token").ValueKind);
        var url = body.GetProperty("claim_url").GetString()!;
        Assert.StartsWith(server.BaseAddress.ToString().TrimEnd('/') + "/claim/", url);
        PortcullisServer.Secrets.Add(url[(url.LastIndexOf('/') + 1)..]);
        return (body.GetProperty("id").GetInt64(), url);
    }

    private static async Task<HttpResponseMessage> ClaimAsync(string url)
    {
        using var client = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, url);
        request.Headers.Accept.ParseAdd("application/json");
        return await client.SendAsync(request);
    }

    [Fact]
    public async Task TheFirstOfManyClaimsGetsTheTokenTheOthersAreToldItWasOpenedAndTheCreatorSeesIt()
    {
        using var admin = server.Client(await server.AdminTokenAsync());
        var (username, _, _) = await server.CreateUserAsync();
        var (id, url) = await HandOverAsync(admin, owner: username);
        var pending = await (await admin.GetAsync($"/api/v1/tokens/{id}")).JsonAsync();
        Assert.Equal(JsonValueKind.Null, pending.GetProperty("link").GetProperty("claimed_at").ValueKind);
        Assert.Equal(HttpStatusCode.Conflict, (await admin.PostAsJsonAsync($"/api/v1/tokens/{id}/rotate", new { })).StatusCode);

        // Looking at the link (a chat's preview does) uses nothing up.
        using var anonymous = new HttpClient();
        for (var i = 0; i < 2; i++)
            Assert.Contains("Reveal the token", await anonymous.GetStringAsync(url));

        var claims = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => ClaimAsync(url)));
        var winner = Assert.Single(claims, c => c.StatusCode == HttpStatusCode.OK);
        Assert.All(claims.Where(c => c != winner), c => Assert.Equal(HttpStatusCode.Gone, c.StatusCode));
        Assert.Contains("cannot be opened again", await claims.First(c => c != winner).Content.ReadAsStringAsync());
        var token = (await winner.JsonAsync()).GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        Assert.Equal(username, (await (await server.Client(token).GetAsync("/api/v1/me")).JsonAsync()).GetProperty("username").GetString());

        var claimed = (await (await admin.GetAsync($"/api/v1/tokens/{id}")).JsonAsync()).GetProperty("link");
        Assert.NotEqual(JsonValueKind.Null, claimed.GetProperty("claimed_at").ValueKind);
        Assert.Equal("127.0.0.1", claimed.GetProperty("claimed_from").GetString());
        Assert.NotEmpty(await LoginThrottleTests.ReadAuditAsync(server, e => e.Event == "token.link_claimed" && e.Subject == username, atLeast: 1));
    }

    [Fact]
    public async Task ALinkNobodyOpenedEndsWithItsTokenAndARevokedTokensLinkRevealsNothing()
    {
        using var admin = server.Client(await server.AdminTokenAsync());
        var (expiredId, expiredUrl) = await HandOverAsync(admin);
        // The link's end, brought forward: the token was created revoked at that same moment.
        await using (var connection = new SqliteConnection($"Data Source={Path.Combine(server.DataDir, "data", "portcullis.db")};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = "UPDATE token_links SET expires_at = $past WHERE token_id = $id; UPDATE api_tokens SET revoked_at = $past WHERE id = $id";
            command.Parameters.AddWithValue("$past", DateTime.UtcNow.AddMinutes(-1).ToString("yyyy-MM-dd HH:mm:ss.FFFFFFF"));
            command.Parameters.AddWithValue("$id", expiredId);
            await command.ExecuteNonQueryAsync();
        }
        using (var expired = await ClaimAsync(expiredUrl))
        {
            Assert.Equal(HttpStatusCode.Gone, expired.StatusCode);
            Assert.Contains("expired", await expired.Content.ReadAsStringAsync());
        }
        Assert.Equal("revoked", (await (await admin.GetAsync($"/api/v1/tokens/{expiredId}")).JsonAsync()).GetProperty("status").GetString());

        var (revokedId, revokedUrl) = await HandOverAsync(admin);
        Assert.Equal(HttpStatusCode.NoContent, (await admin.DeleteAsync($"/api/v1/tokens/{revokedId}")).StatusCode);
        using (var revoked = await ClaimAsync(revokedUrl))
        {
            Assert.Equal(HttpStatusCode.Gone, revoked.StatusCode);
            Assert.Contains("revoked before the link was opened", await revoked.Content.ReadAsStringAsync());
        }
        using var unknown = await ClaimAsync(server.BaseAddress + "claim/not-a-link");
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);

        foreach (var bad in new object[]
        {
            new { name = "x", deliver = "email" }, new { name = "x", deliver = "link", link_expires_in_minutes = 0 },
            new { name = "x", deliver = "link", link_expires_in_minutes = 1441 }, new { name = "x", link_expires_in_minutes = 10 },
        })
        {
            Assert.Equal(HttpStatusCode.BadRequest, (await admin.PostAsJsonAsync("/api/v1/tokens", bad)).StatusCode);
        }
    }

    [Fact]
    public async Task APersonHandsATokenOverFromTheFormAndSomeoneElseRevealsItInTheBrowser()
    {
        var (username, password, _) = await server.CreateUserAsync();
        var context = await browser.Browser.NewContextAsync(new BrowserNewContextOptions { BaseURL = server.BaseAddress.ToString() });
        var page = await context.NewPageAsync();
        await page.GotoAsync("/login");
        await WebUiTests.LogInAsync(page, username, password);
        await page.GotoAsync("/tokens/new");
        await page.GetByLabel("Name", new() { Exact = true }).FillAsync("for-ci");
        await page.GetByLabel("Hand it over as a one-time link").CheckAsync();
        await page.GetByLabel("The link works for").SelectOptionAsync("240");
        await page.GetByRole(AriaRole.Button, new() { Name = "Generate token" }).ClickAsync();
        var url = await page.Locator("#claim-url").InputValueAsync();
        PortcullisServer.Secrets.Add(url[(url.LastIndexOf('/') + 1)..]);

        // Someone else, without a session.
        var other = await (await browser.Browser.NewContextAsync()).NewPageAsync();
        await other.GotoAsync(url);
        Assert.Contains(username, await other.Locator("main").InnerTextAsync());
        await other.GetByRole(AriaRole.Button, new() { Name = "Reveal the token" }).ClickAsync();
        var token = await other.Locator("#new-token").InputValueAsync();
        PortcullisServer.Secrets.Add(token);
        Assert.Equal(HttpStatusCode.OK, (await server.Client(token).GetAsync("/api/v1/me")).StatusCode);
        await other.GotoAsync(url);
        Assert.Contains("cannot be opened again", await other.Locator("main").InnerTextAsync());

        await page.GotoAsync("/tokens");
        await page.GetByRole(AriaRole.Link, new() { Name = "for-ci", Exact = true }).ClickAsync();
        Assert.Contains("as a link, opened on", await page.Locator("dl.facts").InnerTextAsync());
    }
}
