using Microsoft.Extensions.Options;

namespace Portcullis.Hosting;

/// <summary>Top-level settings (no section).</summary>
internal sealed class ServerOptions
{
    /// <summary>The URL clients use to reach this server; the JWT issuer. Defaults to the first of <c>urls</c>.</summary>
    public string? PublicUrl { get; set; }

    /// <summary>Where SQLite, the lock file and other local state live.</summary>
    public string DataDir { get; set; } = "portcullis-data";
}

/// <summary>Checks these settings at start; every problem names the key and the fix (docs/configuration.md).</summary>
internal sealed class ServerOptionsValidator : IValidateOptions<ServerOptions>
{
    public ValidateOptionsResult Validate(string? name, ServerOptions o)
    {
        var errors = new List<string>();
        if (o.PublicUrl is { } url && (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https")))
            errors.Add($"PublicUrl is '{url}'. Set it to the absolute http(s) URL clients use, e.g. 'https://auth.example.com'.");
        return Result(errors);
    }

    private static ValidateOptionsResult Result(List<string> errors) =>
        errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
}
