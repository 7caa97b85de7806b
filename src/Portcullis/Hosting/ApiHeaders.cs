using Microsoft.AspNetCore.Http.Features;

namespace Portcullis.Hosting;

/// <summary>The headers and limits every API answer shares.</summary>
internal static class ApiHeaders
{
    /// <summary>
    /// For the API and the OAuth endpoints (<c>/api</c>, <c>/auth</c>): nothing cached, bodies of at most 1 MiB, and a body in a
    /// charset .NET does not know refused up front (docs/decisions.md, "HTTP"). Every answer gets <c>nosniff</c>.
    /// </summary>
    public static async Task Middleware(HttpContext context, Func<Task> next)
    {
        var headers = context.Response.Headers;
        headers.XContentTypeOptions = "nosniff";
        var path = context.Request.Path;
        if (path.StartsWithSegments("/api") || path.StartsWithSegments("/auth"))
        {
            headers.CacheControl = "no-store";
            // A JSON body in a charset .NET does not know would fail deep in model binding; say so up front.
            if (context.Request.ContentType is { } type && Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(type, out var media)
                && media.Charset.HasValue && !IsKnownCharset(media.Charset.Value))
            {
                await ProblemResponses.WriteAsync(context, StatusCodes.Status415UnsupportedMediaType, "Unsupported media type",
                    $"The charset '{Truncate(media.Charset.Value, 40)}' is not supported. Send UTF-8.");
                return;
            }
            // Management and auth bodies are small; a megabyte is generous and keeps memory bounded.
            if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
                limit.MaxRequestBodySize = 1024 * 1024;
        }
        await next();
    }

    private static bool IsKnownCharset(string charset)
    {
        try
        {
            _ = System.Text.Encoding.GetEncoding(charset.Trim('"'));
            return true;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    private static string Truncate(string s, int max) => s.Length <= max ? s : s[..max] + "…";
}
