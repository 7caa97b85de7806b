namespace Portcullis.Hosting;

/// <summary>Counts requests by route pattern (never the raw path, which could carry anything) and status.</summary>
internal sealed class RequestMetricsMiddleware(RequestDelegate next, PortcullisMetrics metrics)
{
    public async Task InvokeAsync(HttpContext context)
    {
        try
        {
            await next(context);
        }
        finally
        {
            var route = (context.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? "unmatched";
            // A group's "/" endpoint reads "/api/v1/me/": the same route as users write it.
            if (route.Length > 1 && route[^1] == '/')
                route = route[..^1];
            metrics.CountRequest(route, context.Response.StatusCode);
        }
    }
}
