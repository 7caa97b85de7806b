using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using Npgsql;
using Portcullis.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Portcullis.Tests;

/// <summary>
/// crash safety: under a bounded concurrent load of token creations and revocations the
/// server is killed with SIGKILL, again and again, and restarted. Every creation answered 201 must
/// still work, every revocation answered 204 must still hold, and the database must be whole.
/// </summary>
public abstract class CrashSafetyTests(PortcullisServer server, ITestOutputHelper output)
{
    private const int Cycles = 10;
    private const int Workers = 6;

    private sealed record Created(string Id, string Token);

    [Fact]
    public async Task KillingTheServerUnderLoadLosesNoAcknowledgedCreationOrRevocation()
    {
        var admin = await server.AdminTokenAsync();
        var created = new ConcurrentDictionary<string, Created>();   // answered 201
        var revoked = new ConcurrentDictionary<string, Created>();   // answered 204
        var uncertain = new ConcurrentDictionary<string, bool>();    // revocation sent, no answer
        var random = new Random(8);
        var totalRequests = 0;
        var failures = new ConcurrentQueue<string>();
        // After each restart the tokens whose answer is new since the last check are checked (those made or revoked
        // in the cycle), and every token once more at the end: a loss is for good, so the last check finds any.
        var checkedAs = new Dictionary<string, bool>();

        for (var cycle = 1; cycle <= Cycles; cycle++)
        {
            // A restarted server's first requests are slow on a loaded machine (a cold cache, JIT, new database
            // connections, EF's first save): one answered creation first, so the load runs before the kill instead of being cut by it.
            using (var warm = server.Client(admin))
            {
                using var first = await warm.PostAsJsonAsync("/api/v1/tokens", new { name = $"warm-{Guid.NewGuid():N}" });
                Assert.Equal(HttpStatusCode.Created, first.StatusCode);
                PortcullisServer.Secrets.Add(JsonDocument.Parse(await first.Content.ReadAsStringAsync()).RootElement.GetProperty("token").GetString()!);
            }
            using var stop = new CancellationTokenSource();
            var workers = Enumerable.Range(0, Workers).Select(w => Task.Run(async () =>
            {
                using var client = server.Client(admin);
                client.Timeout = TimeSpan.FromSeconds(5);
                var n = 0;
                // Bounded: at most 200 requests per worker and cycle, whatever the timing.
                while (!stop.IsCancellationRequested && n++ < 200)
                {
                    Interlocked.Increment(ref totalRequests);
                    try
                    {
                        var victim = n % 3 == 0 ? created.Values.FirstOrDefault(c => !revoked.ContainsKey(c.Id) && !uncertain.ContainsKey(c.Id)) : null;
                        if (victim is not null && uncertain.TryAdd(victim.Id, true))
                        {
                            using var response = await client.DeleteAsync($"/api/v1/tokens/{victim.Id}", stop.Token);
                            if (response.StatusCode == HttpStatusCode.NoContent)
                            {
                                revoked[victim.Id] = victim;
                                uncertain.TryRemove(victim.Id, out _);
                            }
                            continue;
                        }
                        using var create = await client.PostAsJsonAsync("/api/v1/tokens", new { name = $"crash-{Guid.NewGuid():N}" }, stop.Token);
                        if (create.StatusCode != HttpStatusCode.Created)
                        {
                            failures.Enqueue($"cycle {cycle}: POST answered {(int)create.StatusCode}");
                            continue;
                        }
                        var body = JsonDocument.Parse(await create.Content.ReadAsStringAsync(stop.Token)).RootElement;
                        var token = body.GetProperty("token").GetString()!;
                        PortcullisServer.Secrets.Add(token);
                        created[body.GetProperty("id").ToString()] = new Created(body.GetProperty("id").ToString(), token);
                    }
                    catch (Exception e) when (e is HttpRequestException or TaskCanceledException or OperationCanceledException or IOException)
                    {
                        failures.Enqueue($"cycle {cycle}: {e.GetType().Name} after {n} requests{(stop.IsCancellationRequested ? " (killed)" : "")}");
                        // The server died under this request: its outcome is unknown, and the checks skip it.
                        break;
                    }
                }
            })).ToArray();

            await Task.Delay(random.Next(300, 1200));
            await server.StopAsync(); // SIGKILL, requests in flight
            stop.Cancel();
            await Task.WhenAll(workers);
            await server.StartAsync();

            await CheckAsync(created, revoked, uncertain, checkedAs);
            foreach (var failure in failures.Distinct().Take(10))
                output.WriteLine("  " + failure);
            failures.Clear();
            output.WriteLine($"cycle {cycle}: {created.Count} tokens created, {revoked.Count} revoked, {uncertain.Count} revocations unanswered");
        }

        Assert.True(created.Count >= Cycles * 5, $"the load created only {created.Count} tokens in {totalRequests} requests");
        Assert.True(revoked.Count >= Cycles, $"the load revoked only {revoked.Count} tokens");
        Assert.True(uncertain.Count <= Cycles * Workers, $"{uncertain.Count} revocations were unanswered, more than the requests in flight at the kills");
        await CheckAsync(created, revoked, uncertain, checkedAs: null);
        await server.StopAsync();
        await CheckIntegrityAsync();
        await server.StartAsync();
    }

    /// <param name="checkedAs">The answer each token was last checked for (revoked or not), to skip those; null checks every token.</param>
    private async Task CheckAsync(ConcurrentDictionary<string, Created> created, ConcurrentDictionary<string, Created> revoked, ConcurrentDictionary<string, bool> uncertain,
        Dictionary<string, bool>? checkedAs)
    {
        using var client = server.Client();
        foreach (var c in created.Values)
        {
            if (uncertain.ContainsKey(c.Id))
                continue;
            if (checkedAs is not null)
            {
                if (checkedAs.TryGetValue(c.Id, out var wasRevoked) && wasRevoked == revoked.ContainsKey(c.Id))
                    continue;
                checkedAs[c.Id] = revoked.ContainsKey(c.Id);
            }
            using var request = new HttpRequestMessage(HttpMethod.Get, "/api/v1/me");
            request.Headers.Authorization = new("Bearer", c.Token);
            using var response = await client.SendAsync(request);
            var expected = revoked.ContainsKey(c.Id) ? HttpStatusCode.Unauthorized : HttpStatusCode.OK;
            Assert.True(response.StatusCode == expected,
                $"token {c.Id} ({(revoked.ContainsKey(c.Id) ? "revoked, answered 204" : "created, answered 201")}) now answers {(int)response.StatusCode}");
        }
    }

    private async Task CheckIntegrityAsync()
    {
        if (server.Provider == Provider.Sqlite)
        {
            await using var connection = new SqliteConnection($"Data Source={Path.Combine(server.DataDir, "data", "portcullis.db")};Pooling=False");
            await connection.OpenAsync();
            Assert.Equal("ok", await ScalarAsync(connection, "PRAGMA integrity_check"));
            Assert.Null(await ScalarAsync(connection, "PRAGMA foreign_key_check"));
            Assert.Equal(0L, Convert.ToInt64(await ScalarAsync(connection, OrphanTokens)));
        }
        else
        {
            await using var connection = new NpgsqlConnection(server.ConnectionString);
            await connection.OpenAsync();
            Assert.Equal(0L, Convert.ToInt64(await ScalarAsync(connection, OrphanTokens)));
        }
    }

    // A token without its owner, or one whose successor does not exist: what a half-written change would leave.
    private const string OrphanTokens =
        "SELECT COUNT(*) FROM api_tokens t WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = t.owner_id) " +
        "OR (t.replaced_by_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM api_tokens s WHERE s.id = t.replaced_by_id))";

    private static async Task<object?> ScalarAsync(System.Data.Common.DbConnection connection, string sql)
    {
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = sql;
        var value = await cmd.ExecuteScalarAsync();
        return value is DBNull ? null : value;
    }
}

public sealed class SqliteCrashSafetyTests(SqliteServer server, ITestOutputHelper output) : CrashSafetyTests(server, output), IClassFixture<SqliteServer>;

public sealed class PostgresCrashSafetyTests(PostgresServer server, ITestOutputHelper output) : CrashSafetyTests(server, output), IClassFixture<PostgresServer>;
