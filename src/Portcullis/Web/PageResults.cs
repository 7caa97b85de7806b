using Microsoft.AspNetCore.Components;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Portcullis.Web;

/// <summary>Marks an endpoint as a page of the web UI (<see cref="PageResults.AsWebPages{TBuilder}"/>).</summary>
internal sealed class WebPageMetadata
{
    public static readonly WebPageMetadata Instance = new();
}

/// <summary>
/// Pages are Razor components rendered on the server (<c>Web/Pages</c>), answered with the headers of docs/web-ui.md:
/// no inline script, no framing, no referrer, never cached.
/// </summary>
internal static class PageResults
{
    /// <summary>Endpoints that answer with pages: left out of the OpenAPI document, and known as pages to the pipeline.</summary>
    public static TBuilder AsWebPages<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder =>
        builder.ExcludeFromDescription().WithMetadata(WebPageMetadata.Instance);

    public static bool IsWebPage(this HttpContext http) => http.GetEndpoint()?.Metadata.GetMetadata<WebPageMetadata>() is not null;

    /// <summary>The page <typeparamref name="TPage"/> with <paramref name="parameters"/> (an object whose properties name its parameters).</summary>
    public static RazorComponentResult<TPage> Render<TPage>(HttpContext http, object? parameters = null, int status = StatusCodes.Status200OK)
        where TPage : IComponent
    {
        var headers = http.Response.Headers;
        // A form may lead to a service origin: logging in on the way to a service ends there (Gateway/ServiceOrigins.cs).
        var services = http.RequestServices.GetRequiredService<Gateway.ServiceHosts>().AnyOrigin;
        headers.ContentSecurityPolicy = $"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self' {services}; frame-ancestors 'none'; base-uri 'none'";
        headers.XFrameOptions = "DENY";
        headers["Referrer-Policy"] = "no-referrer";
        // What the antiforgery token in the page's forms requires anyway (it would override anything else, with a warning).
        headers.CacheControl = "no-cache, no-store";
        headers.Pragma = "no-cache";
        return new RazorComponentResult<TPage>(parameters ?? new { }) { StatusCode = status, ContentType = "text/html; charset=utf-8" };
    }

    public static RazorComponentResult<Pages.MessagePage> NotFound(HttpContext http, string text) =>
        Render<Pages.MessagePage>(http, new { Title = "Not found", Text = text }, StatusCodes.Status404NotFound);
}
