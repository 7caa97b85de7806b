using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace Portcullis;

/// <summary>
/// A rule a request broke: the field it concerns (as the API names it), what to do about it, and the HTTP status
/// it means. Domain rules return it; the API answers it as a problem with <c>errors</c> (the shape of ASP.NET
/// Core's validation problems), and the pages show the message next to their field.
/// </summary>
public sealed record RuleError(string Field, string Message, int Status = StatusCodes.Status400BadRequest)
{
    public static RuleError Conflict(string field, string message) => new(field, message, StatusCodes.Status409Conflict);

    public static RuleError Forbidden(string field, string message) => new(field, message, StatusCodes.Status403Forbidden);

    internal ProblemHttpResult ToProblem() => TypedResults.Problem(new HttpValidationProblemDetails(new Dictionary<string, string[]> { [Field] = [Message] })
    {
        Status = Status,
        Title = ProblemResponses.TitleFor(Status),
        Detail = Message,
        Type = ProblemResponses.TypeFor(Status),
    });
}

/// <summary>What a rule-checked change gives: its result, or the rule it broke.</summary>
public readonly record struct Checked<T>(T? Value, RuleError? Error) where T : class
{
    public static implicit operator Checked<T>(T value) => new(value, null);

    public static implicit operator Checked<T>(RuleError error) => new(null, error);

    /// <summary>
    /// The API's answer for a new credential: 201 at <paramref name="location"/>, never stored by a cache (it carries a
    /// secret shown this once), or the broken rule as a problem.
    /// </summary>
    internal Results<Created<T>, ProblemHttpResult> AsCreatedSecret(HttpContext http, Func<T, string> location)
    {
        if (Error is not null)
            return Error.ToProblem();
        http.Response.Headers.CacheControl = "no-store";
        http.Response.Headers.Pragma = "no-cache";
        return TypedResults.Created(location(Value!), Value);
    }
}
