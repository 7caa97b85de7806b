using System.Text.Json;
using Microsoft.AspNetCore.Diagnostics;
using Portcullis.Data;
using Portcullis.Security;

namespace Portcullis.Hosting;

/// <summary>What an exception that reaches the top of the pipeline becomes: a problem document, never a stack trace.</summary>
internal static class ErrorHandling
{
    /// <summary>Every unexpected failure becomes a problem document without internals; the database being down is a 503.</summary>
    public static async Task HandleExceptionAsync(HttpContext context)
    {
        var error = context.Features.Get<IExceptionHandlerFeature>()?.Error;
        switch (error)
        {
            case BadHttpRequestException bad:
                await ProblemResponses.WriteAsync(context, bad.StatusCode, bad.StatusCode switch
                {
                    StatusCodes.Status413PayloadTooLarge => "Payload too large",
                    StatusCodes.Status415UnsupportedMediaType => "Unsupported media type",
                    _ => "Bad request",
                }, SafeBadRequestMessage(bad));
                break;
            case InvalidOperationException json when json.Message.StartsWith("Unable to read the request as JSON", StringComparison.Ordinal):
                await ProblemResponses.WriteAsync(context, StatusCodes.Status415UnsupportedMediaType, "Unsupported media type",
                    "Send the body as application/json in UTF-8.");
                break;
            case PasswordHasherBusyException:
                context.Response.Headers.RetryAfter = "5";
                await ProblemResponses.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "Service busy", "Too many logins are being checked right now. Try again in a few seconds.");
                break;
            case { } e when DatabaseFailures.IsDatabaseFailure(e):
                context.Response.Headers.RetryAfter = "5";
                await ProblemResponses.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "Service unavailable", "The database does not answer. Try again shortly.");
                break;
            default:
                await ProblemResponses.WriteAsync(context, StatusCodes.Status500InternalServerError, "Internal error",
                    $"Something went wrong on the server. Quote trace id {context.TraceIdentifier} when reporting it.");
                break;
        }
    }

    private static string SafeBadRequestMessage(BadHttpRequestException e) => e.StatusCode switch
    {
        StatusCodes.Status413PayloadTooLarge => "The request body is too large.",
        StatusCodes.Status415UnsupportedMediaType => "Send the body as application/json.",
        _ => e.InnerException is JsonException or System.Text.DecoderFallbackException
            ? "The body is not valid JSON (or a field has the wrong type)."
            : "The request is malformed.",
    };
}
