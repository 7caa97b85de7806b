using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// A server whose audit queue holds only 20 events, so that a flood fills it at once; without the per-address limit,
/// so that every attempt of the flood is checked and audited (throttled ones would be refused from memory unaudited).
/// </summary>
public sealed class SmallAuditQueueServer() : PortcullisServer(Provider.Sqlite, new() { ["Audit:QueueCapacity"] = "20", ["Auth:MaxFailedLoginsPerAddress"] = "0" });

/// <summary>docs/decisions.md, "Audit log": under a flood, security events are neither dropped nor crowded out.</summary>
public sealed class AuditFloodTests(SmallAuditQueueServer server) : IClassFixture<SmallAuditQueueServer>
{
    [Fact]
    public async Task AFloodOfFailedClientLoginsLosesNoEventAndCannotHideTheUseOfARevokedToken()
    {
        const int flood = 800;
        var marker = "client-flood" + Guid.NewGuid().ToString("N")[..8];
        var admin = await server.AdminTokenAsync();
        var revoked = await server.CreateTokenAsync(admin, new { name = "revoked-" + marker });
        using var adminClient = server.Client(admin);
        var id = (await (await server.Client(revoked).GetAsync("/api/v1/me")).JsonAsync()).GetProperty("auth").GetProperty("token_id").GetString();
        Assert.Equal(HttpStatusCode.NoContent, (await adminClient.DeleteAsync($"/api/v1/tokens/{id}")).StatusCode);

        using var client = server.Client();
        var floodTask = Parallel.ForEachAsync(Enumerable.Range(0, flood), new ParallelOptions { MaxDegreeOfParallelism = 32 }, async (i, ct) =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/auth/token")
            {
                Content = new FormUrlEncodedContent([new("grant_type", "client_credentials"), new("client_id", marker), new("client_secret", "pcc_wrong" + i)]),
            };
            using var response = await client.SendAsync(request, ct);
            Assert.True(response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.TooManyRequests, $"{(int)response.StatusCode}");
        });
        // In the middle of the flood, someone tries the revoked token.
        await Task.Delay(200);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Client(revoked).GetAsync("/api/v1/me")).StatusCode);
        await floodTask;

        // Every failed attempt and the revoked token's use are in the log; nothing was lost.
        int failures = 0;
        var usedAfterRevoke = false;
        for (var attempt = 0; attempt < 50 && (failures < flood || !usedAfterRevoke); attempt++)
        {
            (failures, usedAfterRevoke) = await CountAsync(adminClient, marker, id!);
            if (failures < flood || !usedAfterRevoke)
                await Task.Delay(200);
        }
        Assert.True(usedAfterRevoke, "token.used_after_revoke is missing from the audit log");
        Assert.Equal(flood, failures);
        var metrics = await (await server.Client().GetAsync("/metrics")).Content.ReadAsStringAsync();
        Assert.Matches(@"(?m)^portcullis_audit_events_lost_total(\{\})? 0$", metrics);
    }

    private static async Task<(int Failures, bool UsedAfterRevoke)> CountAsync(HttpClient admin, string marker, string tokenId)
    {
        var failures = 0;
        var used = false;
        long? before = null;
        do
        {
            var page = await (await admin.GetAsync("/api/v1/audit?limit=1000" + (before is null ? "" : $"&before={before}"))).JsonAsync();
            foreach (var e in page.GetProperty("events").EnumerateArray())
            {
                var name = e.GetProperty("event").GetString();
                if (name == "login.failed" && e.GetProperty("details").ValueKind == JsonValueKind.Object
                    && e.GetProperty("details").TryGetProperty("client_id", out var c) && c.GetString() == marker)
                    failures++;
                if (name == "token.used_after_revoke" && e.GetProperty("token_id").GetString() == tokenId)
                    used = true;
            }
            before = page.GetProperty("next_before").ValueKind == JsonValueKind.Number ? page.GetProperty("next_before").GetInt64() : null;
        }
        while (before is not null);
        return (failures, used);
    }
}
