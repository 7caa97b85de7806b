using Microsoft.Extensions.Options;
using Portcullis.Auth;

namespace Portcullis.Federation;

/// <summary>
/// <c>Auth:Oidc:Providers</c> (docs/single-sign-on.md): OpenID Providers people log in to the web UI through. Read by
/// hand like <see cref="TrustedIssuersOptions"/>, so that every mistake is reported at start with its key and the fix.
/// </summary>
internal sealed class OidcProvidersOptions
{
    public const string Section = "Auth:Oidc:Providers";

    public List<OidcProvider> Providers { get; } = [];

    public List<string> Errors { get; } = [];

    public void Load(IConfigurationSection section)
    {
        foreach (var child in section.GetChildren())
        {
            if (Read(child) is { } provider)
                Providers.Add(provider);
        }
        foreach (var duplicate in Providers.GroupBy(p => p.Name).Where(g => g.Count() > 1))
            Errors.Add($"{Section}: the name '{duplicate.Key}' is used by {duplicate.Count()} providers. Give each its own Name.");
    }

    private OidcProvider? Read(IConfigurationSection s)
    {
        var at = s.Path;
        var errors = Errors.Count;
        var name = s["Name"];
        if (name is null || !FederationSettings.NameShape().IsMatch(name))
            Errors.Add($"{at}:Name is '{name}'. Give the provider a short name of lowercase letters, digits and '-', e.g. 'keycloak'; it is part of the login's paths.");
        var authority = FederationSettings.ReadProviderUrl(s, "Authority", "https://sso.example.com/realms/acme", Errors);
        var clientId = s["ClientId"];
        if (string.IsNullOrWhiteSpace(clientId))
            Errors.Add($"{at}:ClientId is missing. Set it to the client id the provider gave Portcullis.");
        var secret = ReadSecret(s);
        var scopes = FederationSettings.ReadList(s.GetSection("Scopes"));
        if (s["Scopes"] is { } line)
            scopes = [.. line.Split(' ', StringSplitOptions.RemoveEmptyEntries)];
        if (scopes.Count == 0)
            scopes = ["openid", "profile", "email"];
        else if (!scopes.Contains("openid"))
            Errors.Add($"{at}:Scopes must include 'openid' (it is what makes the login OpenID Connect).");
        var usernameClaim = s["UsernameClaim"] ?? "preferred_username";
        var admin = s.GetSection("Admin").Exists() ? FederationSettings.ReadConditions(s.GetSection("Admin"), Errors) : null;
        if (admin is { Count: 0 })
            Errors.Add($"{at}:Admin is empty. Name the claims that make someone an administrator, e.g. \"groups\": \"portcullis-admins\", or leave Admin out.");
        var autoProvision = ReadBool(s, "AutoProvision", true);
        return Errors.Count > errors
            ? null
            : new OidcProvider(name!, s["DisplayName"] ?? name!, authority!, clientId!, secret!, [.. scopes], usernameClaim, admin, autoProvision);
    }

    private string? ReadSecret(IConfigurationSection s)
    {
        var (inline, file) = (s["ClientSecret"], s["ClientSecretFile"]);
        if (inline is not null && file is not null)
        {
            Errors.Add($"{s.Path}: give ClientSecret or ClientSecretFile, not both.");
            return null;
        }
        if (file is null)
        {
            if (string.IsNullOrEmpty(inline))
                Errors.Add($"{s.Path}:ClientSecret is missing. Set it, or ClientSecretFile to a file holding it (better: configuration files get copied around).");
            return inline;
        }
        try
        {
            var secret = File.ReadAllText(file).Trim();
            if (secret.Length == 0)
                Errors.Add($"{s.Path}:ClientSecretFile '{file}' is empty. Put the client secret the provider gave Portcullis in it.");
            return secret;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Errors.Add($"{s.Path}:ClientSecretFile '{file}' cannot be read ({e.Message}). Check the path and that the account running Portcullis may read it.");
            return null;
        }
    }

    private bool ReadBool(IConfigurationSection s, string key, bool fallback)
    {
        if (s[key] is not { } text)
            return fallback;
        if (bool.TryParse(text, out var value))
            return value;
        Errors.Add($"{s.Path}:{key} is '{text}'. Set it to true or false.");
        return fallback;
    }
}

/// <summary>
/// One OpenID Provider: where it is, Portcullis's client at it, the claim that names people, and (optionally) the claim
/// conditions that make someone an administrator, checked at every login.
/// </summary>
internal sealed record OidcProvider(string Name, string DisplayName, Uri Authority, string ClientId, string ClientSecret, string[] Scopes, string UsernameClaim,
    IReadOnlyList<ClaimCondition>? Admin, bool AutoProvision)
{
    /// <summary>The authentication scheme of this provider's OpenID Connect handler.</summary>
    public string Scheme => "oidc-" + Name;

    /// <summary>Where a person's browser starts the login.</summary>
    public string LoginPath => $"/login/oidc/{Name}";

    /// <summary>Where the provider sends the browser back (register it at the provider).</summary>
    public string CallbackPath => $"/login/oidc/{Name}/callback";

    /// <summary>What a user linked to this provider records as its source.</summary>
    public string Source => "oidc:" + Name;
}

/// <summary>Reports the mistakes of <c>Auth:Oidc</c>, and a web UI nobody could log in to.</summary>
internal sealed class OidcProvidersOptionsValidator(IOptions<AuthOptions> auth) : IValidateOptions<OidcProvidersOptions>
{
    public ValidateOptionsResult Validate(string? name, OidcProvidersOptions options)
    {
        var errors = new List<string>(options.Errors);
        if (!auth.Value.LocalLogin && options.Providers.Count == 0 && options.Errors.Count == 0)
            errors.Add("Auth:LocalLogin is false but no provider is configured under Auth:Oidc:Providers: nobody could log in to the web UI. Configure a provider, or set Auth:LocalLogin to true.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
