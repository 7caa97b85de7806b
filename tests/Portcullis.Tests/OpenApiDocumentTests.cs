using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// /openapi/v1.json tells the truth: every operation is called with good and bad credentials, parameters and bodies,
/// and every status it answers must be in the document; and a real OpenAPI linter (Redocly's, from the npm registry)
/// finds no error in it.
/// </summary>
public sealed class OpenApiDocumentTests(SqliteServer server) : IClassFixture<SqliteServer>
{
    private const string Redocly = "@redocly/cli@2.77.0";

    private async Task<JsonElement> DocumentAsync() => await (await server.Client().GetAsync("/openapi/v1.json")).JsonAsync();

    [Fact]
    public async Task EveryStatusAnOperationAnswersIsInTheDocument()
    {
        var admin = await server.AdminTokenAsync();
        var (_, _, user) = await server.CreateUserAsync();
        var servicesOnly = await server.CreateTokenAsync(user, new { name = "services-only", scopes = new[] { "services" } });
        var tokenId = (await (await server.Client(user).GetAsync("/api/v1/tokens")).JsonAsync())[0].GetProperty("id").ToString();
        var client = await server.CreateClientAsync(admin, ["api"], "openapi-walk");

        // Path parameters: one that exists, one that does not, one that is malformed. Nothing that exists is deleted.
        var values = new Dictionary<string, string[]>
        {
            ["id"] = [tokenId, "999999999", "abc"], ["name"] = ["admin", "nobody-here", "%2e%2e"],
            ["clientId"] = [client.ClientId, "client-aaaaaaaaaaaaaaaaaaaa", "x"], ["key"] = ["nope_1", "bad"],
        };
        string?[] credentials = [null, "pcp_garbage", admin, user, servicesOnly];
        string?[] bodies = [null, "null", "{}", "[]", "{\"name\":123}", "{\"name\":\"openapi-walk\",\"scopes\":[\"api\"],\"username\":\"nobody-here\",\"password\":\"short\"}", "{bad json"];

        var failures = new List<string>();
        var calls = 0;
        foreach (var path in (await DocumentAsync()).GetProperty("paths").EnumerateObject())
        {
            foreach (var operation in path.Value.EnumerateObject())
            {
                var method = new HttpMethod(operation.Name.ToUpperInvariant());
                var documented = operation.Value.GetProperty("responses").EnumerateObject().Select(r => r.Name).ToHashSet();
                var hasBody = operation.Value.TryGetProperty("requestBody", out _);
                foreach (var concrete in Concrete(path.Name, values))
                {
                    // Deleting or changing what exists would change what the next calls see: only what does not exist.
                    if (method != HttpMethod.Get && method != HttpMethod.Head && concrete != path.Name && concrete.Contains(tokenId) && method == HttpMethod.Delete)
                        continue;
                    if (method == HttpMethod.Delete && (concrete.EndsWith("/admin") || concrete.Contains(client.ClientId)))
                        continue;
                    foreach (var credential in credentials)
                    {
                        foreach (var body in hasBody ? bodies : [null])
                        {
                            using var request = new HttpRequestMessage(method, concrete);
                            if (credential is not null)
                                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", credential);
                            if (body is not null)
                                request.Content = new StringContent(body, Encoding.UTF8, "application/json");
                            using var response = await server.Client().SendAsync(request);
                            calls++;
                            var status = ((int)response.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture);
                            if (!documented.Contains(status) && !documented.Contains("default"))
                                failures.Add($"{method} {path.Name} answered {status} (e.g. {concrete}, {Who(credential)}, body {body ?? "none"}); documented: {string.Join(' ', documented.Order())}");
                        }
                    }
                }
            }
        }
        Assert.True(calls > 500, $"only {calls} calls");
        var distinct = failures.GroupBy(f => f[..f.IndexOf(" (e.g.", StringComparison.Ordinal)]).Select(g => g.First()).ToList();
        Assert.True(distinct.Count == 0, $"{distinct.Count} answers are not in the document:\n" + string.Join('\n', distinct));

        string Who(string? credential) => credential is null ? "no credential" : credential == admin ? "admin" : credential == user ? "user"
            : credential == servicesOnly ? "services-only" : "garbage";
    }

    private static IEnumerable<string> Concrete(string template, Dictionary<string, string[]> values)
    {
        var start = template.IndexOf('{');
        if (start < 0)
            return [template];
        var end = template.IndexOf('}', start);
        var name = template[(start + 1)..end];
        return (values.GetValueOrDefault(name) ?? ["x"]).SelectMany(v => Concrete(template[..start] + v + template[(end + 1)..], values));
    }

    [Fact]
    public async Task TheDocumentHasABearerSchemeRequiredBodiesAndTheLimitsTheApiEnforces()
    {
        var document = await DocumentAsync();
        Assert.Equal("http", document.GetProperty("components").GetProperty("securitySchemes").GetProperty("bearer").GetProperty("type").GetString());
        var create = document.GetProperty("paths").GetProperty("/api/v1/tokens").GetProperty("post");
        Assert.Equal("bearer", create.GetProperty("security")[0].EnumerateObject().Single().Name);
        var body = create.GetProperty("requestBody");
        Assert.True(body.GetProperty("required").GetBoolean());
        Assert.Equal("#/components/schemas/CreateTokenRequest", body.GetProperty("content").GetProperty("application/json").GetProperty("schema").GetProperty("$ref").GetString());
        var schema = document.GetProperty("components").GetProperty("schemas").GetProperty("CreateTokenRequest");
        Assert.Equal(["name"], schema.GetProperty("required").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal(1, schema.GetProperty("properties").GetProperty("expires_in_days").GetProperty("minimum").GetInt32());
        var rotate = document.GetProperty("components").GetProperty("schemas").GetProperty("RotateTokenRequest");
        Assert.Equal(604800, rotate.GetProperty("properties").GetProperty("grace_seconds").GetProperty("maximum").GetInt32());
        // The OAuth endpoints: POST only, with their form and JSON bodies.
        var token = document.GetProperty("paths").GetProperty("/auth/token");
        Assert.Equal(["post"], token.EnumerateObject().Select(o => o.Name));
        var content = token.GetProperty("post").GetProperty("requestBody").GetProperty("content");
        Assert.True(content.TryGetProperty("application/x-www-form-urlencoded", out _) && content.TryGetProperty("application/json", out _));
    }

    [Fact]
    public async Task RedoclysLinterFindsNoError()
    {
        var file = Path.Combine(Path.GetTempPath(), $"portcullis-openapi-{Guid.NewGuid():N}.json");
        await File.WriteAllTextAsync(file, await server.Client().GetStringAsync("/openapi/v1.json"));
        try
        {
            var (exitCode, output, error) = await ExternalTool.RunAsync("npx", ["--yes", Redocly, "lint", file, "--format", "stylish"],
                "npx lints the OpenAPI document; ./test.sh installs Debian's npm.", TimeSpan.FromMinutes(4));
            Assert.True(exitCode == 0, $"{Redocly} lint found errors:\n{output}{error}");
        }
        finally
        {
            File.Delete(file);
        }
    }
}
