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
}
