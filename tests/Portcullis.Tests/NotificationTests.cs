using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using Microsoft.Playwright;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>A server whose configuration sends every token event to a receiver, with retries short enough for tests.</summary>
public sealed class WebhookFixture : IAsyncLifetime
{
    public const string Secret = "configured-secret-0123456789";

    public WebhookReceiver Configured { get; private set; } = null!;
    public WebhookReceiver Personal { get; private set; } = null!;
    public PortcullisServer Server { get; private set; } = null!;

    public static Dictionary<string, string> Settings(string url)
    {
        var settings = new Dictionary<string, string>
        {
            ["Notifications:Webhooks:0:Url"] = url,
            ["Notifications:Webhooks:0:Secret"] = Secret,
            ["Notifications:PollInterval"] = "00:00:00.1",
            ["Notifications:FirstRetryDelay"] = "00:00:00.2",
            ["Notifications:MaxRetryDelay"] = "00:00:00.4",
            ["Notifications:RetryFor"] = "00:00:05",
            ["Notifications:ExpiryScanInterval"] = "00:00:00.2",
            // The receivers of the tests are on loopback.
            ["Notifications:AllowLocalTargets"] = "true",
        };
        string[] events = ["token.expiring", "token.expired", "token.revoked", "token.used_after_revoke", "token.leaked", "token.denied_source"];
        for (var i = 0; i < events.Length; i++)
            settings[$"Notifications:Webhooks:0:Events:{i}"] = events[i];
        return settings;
    }

    public async Task InitializeAsync()
    {
        Configured = await WebhookReceiver.StartAsync();
        Configured.Secret = Secret;
        Personal = await WebhookReceiver.StartAsync();
        Server = PortcullisServer.With(Provider.Sqlite, Settings(Configured.Url));
        await Server.InitializeAsync();
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        await Configured.DisposeAsync();
        await Personal.DisposeAsync();
    }
}

/// <summary>Webhooks (docs/notifications.md): signed, without secrets, once each, retried with backoff, logged.</summary>
public sealed class NotificationTests(WebhookFixture fixture, SqliteServer plain) : IClassFixture<WebhookFixture>, IClassFixture<SqliteServer>
{
    private PortcullisServer Server => fixture.Server;

    private async Task<(long Id, string Token)> TokenAsync(HttpClient client, object? extra = null)
    {
        var created = await client.PostAsJsonAsync("/api/v1/tokens", extra ?? new { name = "t-" + Guid.NewGuid().ToString("N")[..8] });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var body = await created.JsonAsync();
        var token = body.GetProperty("token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        return (body.GetProperty("id").GetInt64(), token);
    }

    private async Task SqlAsync(string sql, long id)
    {
        await using var connection = new SqliteConnection($"Data Source={Path.Combine(Server.DataDir, "data", "portcullis.db")};Pooling=False");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.Parameters.AddWithValue("$id", id);
        command.Parameters.AddWithValue("$past", DateTime.UtcNow.AddDays(-30).ToString("yyyy-MM-dd HH:mm:ss.FFFFFFF"));
        command.Parameters.AddWithValue("$recent", DateTime.UtcNow.AddMinutes(-1).ToString("yyyy-MM-dd HH:mm:ss.FFFFFFF"));
        Assert.Equal(1, await command.ExecuteNonQueryAsync());
    }

    [Fact]
    public async Task EveryKindOfEventReachesTheConfiguredWebhookSignedOnceAndWithoutSecrets()
    {
        var (_, _, person) = await Server.CreateUserAsync();
        using var client = Server.Client(person);
        var tokens = new List<string>();

        var (revokedId, revoked) = await TokenAsync(client);
        var ids = new List<long> { revokedId };
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/v1/tokens/{revokedId}")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await Server.Client(revoked).GetAsync("/api/v1/me")).StatusCode);
        var (leakedId, leaked) = await TokenAsync(client);
        ids.Add(leakedId);
        using (var revoke = await new HttpClient().PostAsync(Server.BaseAddress + "auth/revoke",
            new FormUrlEncodedContent([new("token", leaked), new("reason", "leaked")])))
            Assert.Equal(HttpStatusCode.OK, revoke.StatusCode);
        var (fencedId, fenced) = await TokenAsync(client, new { name = "fenced-" + Guid.NewGuid().ToString("N")[..6], allowed_cidrs = new[] { "10.0.0.0/8" } });
        ids.Add(fencedId);
        Assert.Equal(HttpStatusCode.Forbidden, (await Server.Client(fenced).GetAsync("/api/v1/me")).StatusCode);
        // Ends: a 30-day token with 3 days left, and one that ended a minute ago.
        var (endingId, ending) = await TokenAsync(client, new { name = "ending-" + Guid.NewGuid().ToString("N")[..6], expires_in_days = 3 });
        await SqlAsync("UPDATE api_tokens SET created_at = $past WHERE id = $id", endingId);
        var (endedId, ended) = await TokenAsync(client, new { name = "ended-" + Guid.NewGuid().ToString("N")[..6], expires_in_days = 3 });
        await SqlAsync("UPDATE api_tokens SET expires_at = $recent WHERE id = $id", endedId);
        tokens.AddRange([revoked, leaked, fenced, ending, ended]);
        ids.AddRange([endingId, endedId]);
        var idTexts = ids.Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToHashSet();

        string[] kinds = ["token.revoked", "token.used_after_revoke", "token.leaked", "token.denied_source", "token.expiring", "token.expired"];
        // The leaked token is revoked too: seven events.
        var heard = await fixture.Configured.WaitForAsync(d => idTexts.Contains(d.Body.GetProperty("token_id").GetString()!), kinds.Length + 1);
        Assert.True(heard.Count == kinds.Length + 1, "heard: " + string.Join(", ", heard.Select(d => d.Event)));
        foreach (var kind in kinds)
            Assert.Contains(heard, d => d.Event == kind);
        Assert.All(heard, d => Assert.Equal(d.Event, d.Body.GetProperty("event").GetString()));
        Assert.All(heard, d => Assert.Equal(d.Id, d.Body.GetProperty("id").GetString()));
        Assert.Equal(heard.Count, heard.Select(d => d.Id).Distinct().Count());
        Assert.Equal(0, fixture.Configured.BadSignatures);
        Assert.All(heard, d => Assert.DoesNotContain(tokens, t => d.Body.GetRawText().Contains(t, StringComparison.Ordinal)));
        var expiring = heard.Single(d => d.Event == "token.expiring");
        Assert.Equal(7, expiring.Body.GetProperty("details").GetProperty("days_left").GetInt32());
        Assert.Equal(endingId.ToString(System.Globalization.CultureInfo.InvariantCulture), expiring.Body.GetProperty("token_id").GetString());
    }

    [Fact]
    public async Task AFailingReceiverIsTriedAgainWithBackoffUntilItTakesTheDeliveryAndAReceiverThatNeverDoesIsGivenUp()
    {
        var (_, _, person) = await Server.CreateUserAsync();
        using var client = Server.Client(person);
        var admin = Server.Client(await Server.AdminTokenAsync());

        // Five refusals: more than one attempt's quick retries, fewer than a day's worth.
        fixture.Configured.FailNext(5);
        var (id, _) = await TokenAsync(client);
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/v1/tokens/{id}")).StatusCode);
        var idText = id.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var heard = await fixture.Configured.WaitForAsync(d => d.Body.GetProperty("token_id").GetString() == idText, 1);
        var delivery = Assert.Single(heard);
        var log = await (await admin.GetAsync("/api/v1/webhooks/deliveries?all=true")).JsonAsync();
        var entry = log.EnumerateArray().Single(d => d.GetProperty("delivery_id").GetString() == delivery.Id);
        Assert.Equal("delivered", entry.GetProperty("status").GetString());
        Assert.True(entry.GetProperty("attempts").GetInt32() >= 2, "the receiver's refusals did not take a second attempt");
        Assert.True(entry.GetProperty("configured").GetBoolean());

        // Never taken: given up after Notifications:RetryFor (5 s here), with the reason.
        fixture.Configured.FailNext(int.MaxValue);
        try
        {
            var (doomed, _) = await TokenAsync(client);
            Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/v1/tokens/{doomed}")).StatusCode);
            var deadline = DateTime.UtcNow.AddSeconds(20);
            JsonElement? failed = null;
            while (failed is null && DateTime.UtcNow < deadline)
            {
                await Task.Delay(250);
                failed = (await (await admin.GetAsync("/api/v1/webhooks/deliveries?all=true")).JsonAsync()).EnumerateArray()
                    .Where(d => d.GetProperty("status").GetString() == "failed").Cast<JsonElement?>().FirstOrDefault();
            }
            Assert.NotNull(failed);
            Assert.Equal("The receiver answered 503.", failed.Value.GetProperty("last_error").GetString());
        }
        finally
        {
            fixture.Configured.FailNext(0);
        }
    }

    [Fact]
    public async Task APersonsWebhookHearsOfTheirOwnTokensOnlyAndItsSecretIsShownOnce()
    {
        var (_, _, alice) = await Server.CreateUserAsync();
        var (_, _, bob) = await Server.CreateUserAsync();
        using var asAlice = Server.Client(alice);
        var created = await asAlice.PostAsJsonAsync("/api/v1/webhooks", new { url = fixture.Personal.Url, events = new[] { "token.revoked" } });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var webhook = await created.JsonAsync();
        fixture.Personal.Secret = webhook.GetProperty("secret").GetString()!;
        PortcullisServer.Secrets.Add(fixture.Personal.Secret);
        var listed = (await (await asAlice.GetAsync("/api/v1/webhooks")).JsonAsync())[0];
        Assert.Equal(JsonValueKind.Null, listed.GetProperty("secret").ValueKind);

        var (aliceToken, _) = await TokenAsync(asAlice);
        using var asBob = Server.Client(bob);
        var (bobToken, _) = await TokenAsync(asBob);
        Assert.Equal(HttpStatusCode.NoContent, (await asBob.DeleteAsync($"/api/v1/tokens/{bobToken}")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await asAlice.DeleteAsync($"/api/v1/tokens/{aliceToken}")).StatusCode);
        var heard = await fixture.Personal.WaitForAsync(_ => true, 1);
        var only = Assert.Single(heard);
        Assert.Equal(aliceToken.ToString(System.Globalization.CultureInfo.InvariantCulture), only.Body.GetProperty("token_id").GetString());
        Assert.Equal(0, fixture.Personal.BadSignatures);
        // Alice sees her delivery; Bob sees none of hers.
        Assert.Single((await (await asAlice.GetAsync("/api/v1/webhooks/deliveries")).JsonAsync()).EnumerateArray());
        Assert.Empty((await (await asBob.GetAsync("/api/v1/webhooks/deliveries")).JsonAsync()).EnumerateArray());
        Assert.Equal(HttpStatusCode.Forbidden, (await asBob.GetAsync("/api/v1/webhooks/deliveries?all=true")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await asBob.DeleteAsync($"/api/v1/webhooks/{webhook.GetProperty("id").GetInt64()}")).StatusCode);
    }

    [Fact]
    public async Task AWebhookMayNotPointAtThisMachineAndNamesOnlyKnownEvents()
    {
        var (_, _, person) = await plain.CreateUserAsync();
        using var client = plain.Client(person);
        foreach (var (body, field) in new (object, string)[]
        {
            (new { url = "http://127.0.0.1:9/hook", events = new[] { "token.revoked" } }, "url"),
            (new { url = "http://[::1]:9/hook", events = new[] { "token.revoked" } }, "url"),
            (new { url = "http://169.254.169.254/latest/meta-data", events = new[] { "token.revoked" } }, "url"),
            (new { url = "ftp://example.com/", events = new[] { "token.revoked" } }, "url"),
            (new { url = "https://example.com/hook", events = new[] { "token.created" } }, "events"),
            (new { url = "https://example.com/hook", events = Array.Empty<string>() }, "events"),
        })
        {
            using var refused = await client.PostAsJsonAsync("/api/v1/webhooks", body);
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.True((await refused.JsonAsync()).GetProperty("errors").TryGetProperty(field, out _), field);
        }
    }
}

/// <summary>Two instances on one PostgreSQL database, both configured with the same webhook: each event is delivered once.</summary>
public sealed class NotificationMultiInstanceTests : IAsyncLifetime
{
    private WebhookReceiver _receiver = null!;
    private PostgresServer _a = null!;
    private PortcullisServer _b = null!;

    public async Task InitializeAsync()
    {
        _receiver = await WebhookReceiver.StartAsync();
        _receiver.Secret = WebhookFixture.Secret;
        _a = new PostgresServer(WebhookFixture.Settings(_receiver.Url));
        await _a.InitializeAsync();
        _b = await _a.StartSecondInstanceAsync(WebhookFixture.Settings(_receiver.Url));
    }

    public async Task DisposeAsync()
    {
        await _b.DisposeAsync();
        await _a.DisposeAsync();
        await _receiver.DisposeAsync();
    }

    [Fact]
    public async Task TwentyRevocationsOnTwoInstancesAreTwentyDeliveries()
    {
        var (_, _, person) = await _a.CreateUserAsync();
        var ids = new List<long>();
        for (var i = 0; i < 20; i++)
        {
            var body = await (await _a.Client(person).PostAsJsonAsync("/api/v1/tokens", new { name = $"t{i}" })).JsonAsync();
            PortcullisServer.Secrets.Add(body.GetProperty("token").GetString()!);
            ids.Add(body.GetProperty("id").GetInt64());
        }
        await Task.WhenAll(ids.Select((id, i) => (i % 2 == 0 ? _a : _b).Client(person).DeleteAsync($"/api/v1/tokens/{id}")));
        var heard = await _receiver.WaitForAsync(d => d.Event == "token.revoked", 20);
        Assert.Equal(20, heard.Count);
        Assert.Equal(20, heard.Select(d => d.Body.GetProperty("token_id").GetString()).Distinct().Count());
        Assert.Equal(0, _receiver.BadSignatures);
    }
}

/// <summary>The Webhooks page in a real browser: a person adds a webhook (its secret shown once) and sees its deliveries.</summary>
public sealed class NotificationUiTests(WebhookFixture fixture, BrowserFixture browser) : IClassFixture<WebhookFixture>, IClassFixture<BrowserFixture>
{
    [Fact]
    public async Task APersonAddsAWebhookAndSeesItsDeliveryDelivered()
    {
        var server = fixture.Server;
        var (username, password, person) = await server.CreateUserAsync();
        var page = await (await browser.Browser.NewContextAsync(new BrowserNewContextOptions { BaseURL = server.BaseAddress.ToString() })).NewPageAsync();
        await page.GotoAsync("/login");
        await WebUiTests.LogInAsync(page, username, password);
        await page.GetByRole(AriaRole.Link, new() { Name = "Webhooks" }).ClickAsync();
        await page.GetByLabel("URL").FillAsync(fixture.Personal.Url);
        foreach (var other in new[] { "token.expiring", "token.expired", "token.used_after_revoke", "token.leaked", "token.denied_source" })
            await page.GetByLabel(other).UncheckAsync();
        await page.GetByRole(AriaRole.Button, new() { Name = "Add webhook" }).ClickAsync();
        fixture.Personal.Secret = await page.Locator("#webhook-secret").InputValueAsync();
        PortcullisServer.Secrets.Add(fixture.Personal.Secret);

        using var client = server.Client(person);
        var created = await (await client.PostAsJsonAsync("/api/v1/tokens", new { name = "watched" })).JsonAsync();
        PortcullisServer.Secrets.Add(created.GetProperty("token").GetString()!);
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/v1/tokens/{created.GetProperty("id").GetInt64()}")).StatusCode);
        Assert.Single(await fixture.Personal.WaitForAsync(d => d.Event == "token.revoked", 1));

        await page.GotoAsync("/webhooks");
        var row = page.Locator("table.deliveries tbody tr").First;
        Assert.Contains("token.revoked", await row.InnerTextAsync());
        Assert.Contains("delivered", await row.InnerTextAsync());
        Assert.DoesNotContain(fixture.Personal.Secret, await page.ContentAsync());
    }
}
