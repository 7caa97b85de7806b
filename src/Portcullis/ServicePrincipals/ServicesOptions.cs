using Microsoft.Extensions.Options;
using Portcullis.Gateway;
using Portcullis.Security;

namespace Portcullis.ServicePrincipals;

/// <summary>
/// One entry of the <c>Services</c> configuration list (docs/services.md): a non-human principal, JupyterHub style,
/// optionally a process Portcullis runs and a URL the gateway serves at <c>/services/{name}/</c>.
/// </summary>
internal sealed class ServiceDefinition
{
    public string? Name { get; set; }

    /// <summary>A pre-shared token (e.g. <c>openssl rand -hex 32</c>), at least 32 characters; stored hashed.</summary>
    public string? ApiToken { get; set; }

    public bool Admin { get; set; }

    /// <summary>Scopes of the service; default <c>["api"]</c>. <c>Admin: true</c> adds <c>admin</c>.</summary>
    public List<string>? Scopes { get; set; }

    /// <summary>The program and its arguments, run at start and restarted when it exits.</summary>
    public List<string>? Command { get; set; }

    public Dictionary<string, string>? Environment { get; set; }

    public string? Url { get; set; }

    public string? WorkingDirectory { get; set; }

    public ScopeSet EffectiveScopes =>
        ScopeSet.Parse(string.Join(' ', Scopes is { Count: > 0 } ? Scopes : [Security.Scopes.Api]))
            .Union(Admin ? ScopeSet.AdminRights : ScopeSet.Empty);
}

/// <summary>The <c>Services</c> section: bound as a list.</summary>
internal sealed class ServicesOptions
{
    public const string Section = "Services";

    public List<ServiceDefinition> Services { get; set; } = [];

    /// <summary>Values that could not be read (e.g. <c>admin: "yes"</c>), reported with the other errors.</summary>
    public List<string> BindingErrors { get; } = [];

    public const int MinTokenLength = 32;
}

internal sealed class ServicesOptionsValidator : IValidateOptions<ServicesOptions>
{
    public ValidateOptionsResult Validate(string? name, ServicesOptions o)
    {
        var errors = new List<string>(o.BindingErrors);
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < o.Services.Count; i++)
        {
            var s = o.Services[i];
            var what = $"Services:{i}" + (s.Name is null ? "" : $" (service '{s.Name}')");
            if (s.Name is null || !ServiceRules.Name().IsMatch(s.Name))
                errors.Add($"{what}:Name is '{s.Name}'. Use 1 to 64 lowercase letters, digits and '-', e.g. 'idle-reaper'.");
            else if (!names.Add(s.Name))
                errors.Add($"{what}: the name '{s.Name}' is used twice. Give each service its own name.");
            if (s.ApiToken is { } token && (token.Length < ServicesOptions.MinTokenLength || token.Length > 8192 || token.Any(c => c <= ' ' || c > '~')))
                errors.Add($"{what}:ApiToken is {(token.Length < ServicesOptions.MinTokenLength ? $"{token.Length} characters long" : "not printable ASCII without spaces")}. " +
                    $"Use at least {ServicesOptions.MinTokenLength} random characters, e.g. from `openssl rand -hex 32`, or leave it out to have one generated for a managed service.");
            if (s.Scopes is { } scopes && !ScopeSet.TryParse(scopes, out _, out var scopeError))
                errors.Add($"{what}:Scopes: {scopeError}");
            if (s.Command is { } command && (command.Count == 0 || string.IsNullOrWhiteSpace(command[0])))
                errors.Add($"{what}:Command is empty. Give the program and its arguments as a list, e.g. [\"python3\", \"reaper.py\"].");
            if (s.Url is { } url && !ServiceRules.TryParseUpstream(url, out _))
                errors.Add($"{what}:Url is '{url}'. Use an absolute http(s) URL without query, e.g. 'http://127.0.0.1:9000'.");
            if (s.WorkingDirectory is { } dir && !Directory.Exists(dir))
                errors.Add($"{what}:WorkingDirectory '{dir}' does not exist.");
            if (s.ApiToken is null && s.Command is null && s.Url is null)
                errors.Add($"{what} has neither ApiToken, Command nor Url, so nothing can use it. Add an ApiToken for an external service, or a Command for Portcullis to run.");
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>
/// Reads <c>Services</c> with the keys of docs/services.md as written in JSON (<c>api_token</c>,
/// <c>working_directory</c>) or in .NET style (<c>ApiToken</c>); keys are case-insensitive.
/// </summary>
internal static class ServicesConfiguration
{
    public static void Bind(IConfiguration configuration, ServicesOptions options, List<string> errors)
    {
        var i = 0;
        foreach (var c in configuration.GetSection(ServicesOptions.Section).GetChildren().OrderBy(c => int.TryParse(c.Key, out var n) ? n : int.MaxValue))
        {
            var admin = c["admin"];
            if (admin is not null && !bool.TryParse(admin, out _))
                errors.Add($"Services:{i}:admin is '{admin}'. Use true or false.");
            var command = c.GetSection("command");
            options.Services.Add(new ServiceDefinition
            {
                Name = c["name"],
                ApiToken = c["api_token"] ?? c["apitoken"],
                Admin = admin is not null && bool.TryParse(admin, out var a) && a,
                Scopes = c.GetSection("scopes").GetChildren().Select(x => x.Value ?? "").ToList() is { Count: > 0 } scopes ? scopes : null,
                Command = command.Value is { } single ? [single] : command.GetChildren().Select(x => x.Value ?? "").ToList() is { Count: > 0 } list ? list : null,
                Environment = c.GetSection("environment").GetChildren().ToDictionary(x => x.Key, x => x.Value ?? ""),
                Url = c["url"],
                WorkingDirectory = c["working_directory"] ?? c["workingdirectory"],
            });
            i++;
        }
    }
}
