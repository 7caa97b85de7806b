using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;

namespace Portcullis.Tests.Infrastructure;

public static class HttpExtensions
{
    public static async Task<JsonElement> JsonAsync(this HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        try
        {
            return JsonDocument.Parse(text).RootElement.Clone();
        }
        catch (JsonException)
        {
            throw new Xunit.Sdk.XunitException($"Expected JSON but got {(int)response.StatusCode}: {text}");
        }
    }

    public static HttpRequestMessage WithAuthorization(this HttpRequestMessage request, string scheme, string value)
    {
        request.Headers.TryAddWithoutValidation("Authorization", $"{scheme} {value}");
        return request;
    }

    public static string Header(this HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? string.Join(", ", values)
        : response.Content.Headers.TryGetValues(name, out var contentValues) ? string.Join(", ", contentValues) : "";

    public static AuthenticationHeaderValue Bearer(string token) => new("Bearer", token);

    /// <summary>
    /// Polls <c>/api/v1/me</c> every 10 ms (bounded to 5 s) until the client's credential is refused; returns when, since
    /// <paramref name="since"/> (default: now), the first refused request was sent. How fast a change reaches another
    /// instance: a change that arrives late still shows, as a request sent after it should have arrived and accepted,
    /// while the time a loaded machine takes to answer that request (a good part of a second in CI) does not count.
    /// </summary>
    public static async Task<TimeSpan> UntilUnauthorizedAsync(this HttpClient client, Stopwatch? since = null)
    {
        since ??= Stopwatch.StartNew();
        var limit = since.Elapsed + TimeSpan.FromSeconds(5);
        while (since.Elapsed < limit)
        {
            var sent = since.Elapsed;
            if ((await client.GetAsync("/api/v1/me")).StatusCode == HttpStatusCode.Unauthorized)
                return sent;
            await Task.Delay(10);
        }
        return since.Elapsed;
    }
}
