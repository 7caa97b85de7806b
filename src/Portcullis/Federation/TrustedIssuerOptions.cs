using System.Globalization;
using System.IO.Enumeration;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;
using Portcullis.Security;
using Portcullis.Users;

namespace Portcullis.Federation;

/// <summary>
/// <c>Auth:TrustedIssuers</c> (docs/trusted-issuers.md): identity providers whose signed tokens Portcullis trades for
/// short-lived access tokens of its own, by rules. Read by hand rather than bound, because a claim condition is either
/// one pattern or a list of them; every mistake is collected with the key and the fix, and reported at start.
/// </summary>
internal sealed class TrustedIssuersOptions
{
    public const string Section = "Auth:TrustedIssuers";

    /// <summary>The longest an exchanged token may live: far below a CI job's own secrets, long enough for a deploy.</summary>
    public static readonly TimeSpan MaxLifetime = TimeSpan.FromHours(1);

    public static readonly TimeSpan DefaultLifetime = TimeSpan.FromMinutes(15);

    public static readonly string[] DefaultAlgorithms = ["RS256", "ES256"];

    /// <summary>What a trusted issuer may sign with: asymmetric algorithms only, so nobody holding the public key can sign.</summary>
    public static readonly string[] SupportedAlgorithms = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"];

    public List<TrustedIssuer> Issuers { get; } = [];

    public List<string> Errors { get; } = [];

    /// <summary>Reads every issuer under <see cref="Section"/>; what is wrong goes to <see cref="Errors"/>.</summary>
    public void Load(IConfigurationSection section)
    {
        foreach (var child in section.GetChildren())
        {
            if (ReadIssuer(child) is { } issuer)
                Issuers.Add(issuer);
        }
        foreach (var duplicate in Issuers.GroupBy(i => i.Name, StringComparer.OrdinalIgnoreCase).Where(g => g.Count() > 1))
            Errors.Add($"{Section}: the name '{duplicate.Key}' is used by {duplicate.Count()} issuers. Give each its own Name.");
        foreach (var duplicate in Issuers.GroupBy(i => i.Issuer, StringComparer.Ordinal).Where(g => g.Count() > 1))
            Errors.Add($"{Section}: the issuer '{duplicate.Key}' is configured {duplicate.Count()} times. Put all its rules under one entry.");
    }

    private TrustedIssuer? ReadIssuer(IConfigurationSection s)
    {
        var at = s.Path;
        var errors = Errors.Count;
        var name = s["Name"];
        if (name is null || !FederationSettings.NameShape().IsMatch(name))
            Errors.Add($"{at}:Name is '{name}'. Give the issuer a short name of lowercase letters, digits and '-', e.g. 'github-actions'.");
        var issuer = s["Issuer"];
        FederationSettings.ReadProviderUrl(s, "Issuer", "https://token.actions.githubusercontent.com", Errors);
        var audience = s["Audience"];
        if (string.IsNullOrWhiteSpace(audience))
            Errors.Add($"{at}:Audience is missing. Set it to the audience the provider's tokens must name for Portcullis (in GitHub Actions, the 'audience' of core.getIDToken), e.g. this server's URL.");
        var algorithms = FederationSettings.ReadList(s.GetSection("Algorithms"));
        if (algorithms.Count == 0)
            algorithms = [.. DefaultAlgorithms];
        foreach (var alg in algorithms.Where(a => !SupportedAlgorithms.Contains(a, StringComparer.Ordinal)))
            Errors.Add($"{at}:Algorithms names '{alg}'. Allow only asymmetric algorithms: {string.Join(", ", SupportedAlgorithms)}.");
        var refresh = FederationSettings.ReadTimeSpan(s, "UnknownKeyRefreshInterval", TimeSpan.FromSeconds(10), TimeSpan.Zero, TimeSpan.FromHours(1), Errors);

        var rules = new List<ExchangeRule>();
        foreach (var ruleSection in s.GetSection("Rules").GetChildren())
        {
            if (ReadRule(ruleSection) is { } rule)
                rules.Add(rule);
        }
        if (!s.GetSection("Rules").GetChildren().Any())
            Errors.Add($"{at}:Rules is empty. Give at least one rule: the claims a token must have, and what it is exchanged for.");
        foreach (var duplicate in rules.GroupBy(r => r.Name, StringComparer.OrdinalIgnoreCase).Where(g => g.Count() > 1))
            Errors.Add($"{at}:Rules: the name '{duplicate.Key}' is used by {duplicate.Count()} rules. Give each its own Name.");

        return Errors.Count > errors ? null : new TrustedIssuer(name!, issuer!, audience!, [.. algorithms], refresh, rules);
    }

    private ExchangeRule? ReadRule(IConfigurationSection s)
    {
        var at = s.Path;
        var errors = Errors.Count;
        var name = s["Name"];
        if (name is null || !FederationSettings.NameShape().IsMatch(name))
            Errors.Add($"{at}:Name is '{name}'. Give the rule a short name of lowercase letters, digits and '-', e.g. 'model-main'; refusals and the audit log name it.");
        var conditions = FederationSettings.ReadConditions(s.GetSection("Claims"), Errors);
        // Without a condition, every token the issuer signs for this audience would match: for GitHub, any repository in the world.
        if (conditions.Count == 0)
            Errors.Add($"{at}:Claims is empty. Name at least one claim the token must have, e.g. \"repository\": \"acme/model\"; otherwise every token of the issuer would match.");
        var scopeNames = s["Scopes"] is { } line ? line.Split(' ', StringSplitOptions.RemoveEmptyEntries) : [.. FederationSettings.ReadList(s.GetSection("Scopes"))];
        if (!ScopeSet.TryParse(scopeNames, out var scopes, out var scopeError) || scopes.IsEmpty)
            Errors.Add($"{at}:Scopes is '{string.Join(' ', scopeNames)}'. {scopeError ?? "Give the scopes the exchanged token gets, e.g. 'services:model'."}");
        var lifetime = FederationSettings.ReadTimeSpan(s, "Lifetime", DefaultLifetime, TimeSpan.FromMinutes(1), MaxLifetime, Errors);
        var actAs = s["ActAs"];
        if (UsersApi.ValidateUsername(actAs) is not null)
            Errors.Add($"{at}:ActAs is '{actAs}'. Name the user or service principal the exchanged token acts as, e.g. 'model-deployer'.");
        return Errors.Count > errors ? null : new ExchangeRule(name!, conditions, scopes, lifetime, actAs!);
    }

}

/// <summary>What reading <c>Auth:TrustedIssuers</c> and <c>Auth:Oidc</c> shares: names, URLs, lists, durations, claim conditions.</summary>
internal static partial class FederationSettings
{
    /// <summary>A short name of lowercase letters, digits and '-': it appears in paths, the audit log and messages.</summary>
    [GeneratedRegex("^[a-z0-9][a-z0-9-]{0,62}$")]
    public static partial Regex NameShape();

    public static List<string> ReadList(IConfigurationSection s) =>
        [.. s.GetChildren().Select(c => c.Value).OfType<string>()];

    public static TimeSpan ReadTimeSpan(IConfigurationSection s, string key, TimeSpan fallback, TimeSpan min, TimeSpan max, List<string> errors)
    {
        if (s[key] is not { } text)
            return fallback;
        if (TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out var value) && value >= min && value <= max)
            return value;
        errors.Add($"{s.Path}:{key} is '{text}'. Set it between {min:c} and {max:c} (default {fallback:c}).");
        return fallback;
    }

    /// <summary>An absolute http(s) URL without query or fragment, https unless the host is a loopback address; null after adding why not.</summary>
    public static Uri? ReadProviderUrl(IConfigurationSection s, string key, string example, List<string> errors)
    {
        var text = s[key];
        if (text is null || !Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Scheme is not ("https" or "http")
            || !string.IsNullOrEmpty(uri.Query) || !string.IsNullOrEmpty(uri.Fragment))
        {
            errors.Add($"{s.Path}:{key} is '{text}'. Set it to the provider's URL as its tokens name it in 'iss', e.g. {example}.");
            return null;
        }
        if (uri.Scheme == "http" && !IsLoopback(uri))
        {
            errors.Add($"{s.Path}:{key} is '{text}'. Keys fetched over plain http could be swapped on the way: use https (http is accepted only for a provider on this machine's loopback).");
            return null;
        }
        return uri;
    }

    public static bool IsLoopback(Uri uri) =>
        uri.IsLoopback || (IPAddress.TryParse(uri.Host.Trim('[', ']'), out var address) && IPAddress.IsLoopback(address));

    /// <summary>Claim conditions: each child is a claim, its value one pattern or a list of them.</summary>
    public static List<ClaimCondition> ReadConditions(IConfigurationSection section, List<string> errors)
    {
        var conditions = new List<ClaimCondition>();
        foreach (var claim in section.GetChildren())
        {
            var patterns = claim.Value is { } single ? [single] : ReadList(claim);
            if (patterns.Count == 0 || patterns.Any(string.IsNullOrEmpty))
                errors.Add($"{claim.Path} is empty. Give the value the claim must have, a pattern with * and ?, or a list of them.");
            else
                conditions.Add(new ClaimCondition(claim.Key, [.. patterns]));
        }
        return conditions;
    }
}

/// <summary>One trusted issuer: its URL (the tokens' <c>iss</c>, and where its discovery document is), the audience it must name, its rules.</summary>
internal sealed record TrustedIssuer(string Name, string Issuer, string Audience, string[] Algorithms, TimeSpan UnknownKeyRefreshInterval,
    IReadOnlyList<ExchangeRule> Rules)
{
    /// <summary>The OpenID Connect discovery document, which names the JWKS.</summary>
    public string DiscoveryUrl => Issuer.TrimEnd('/') + "/.well-known/openid-configuration";

    /// <summary>
    /// The first rule whose every condition holds, or null with why each rule did not match: the claim and what it wanted,
    /// never the token's own values.
    /// </summary>
    public (ExchangeRule? Rule, string? Mismatch) Match(JsonElement claims)
    {
        var reasons = new List<string>();
        foreach (var rule in Rules)
        {
            if (rule.Conditions.FirstOrDefault(c => !c.HoldsFor(claims)) is not { } failed)
                return (rule, null);
            reasons.Add($"rule '{rule.Name}': claim '{failed.Claim}' {failed.Describe()}");
        }
        return (null, string.Join("; ", reasons));
    }
}

/// <summary>What a rule gives a token that matches it: scopes (within what <see cref="ActAs"/> holds), a lifetime, a principal.</summary>
internal sealed record ExchangeRule(string Name, IReadOnlyList<ClaimCondition> Conditions, ScopeSet Scopes, TimeSpan Lifetime, string ActAs);

/// <summary>
/// A claim the token must have, matching one of the patterns: exact text, or with <c>*</c> (any run of characters) and
/// <c>?</c> (one character). Case matters. A claim that is a list (<c>groups</c>, <c>aud</c>) matches when one element does;
/// numbers and booleans are compared as their JSON text (<c>true</c>, <c>42</c>).
/// </summary>
internal sealed record ClaimCondition(string Claim, string[] Patterns)
{
    public bool HoldsFor(JsonElement claims)
    {
        if (claims.ValueKind != JsonValueKind.Object || !claims.TryGetProperty(Claim, out var value))
            return false;
        return value.ValueKind == JsonValueKind.Array ? value.EnumerateArray().Any(Matches) : Matches(value);
    }

    private bool Matches(JsonElement value)
    {
        var text = value.ValueKind switch
        {
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Number or JsonValueKind.True or JsonValueKind.False => value.GetRawText(),
            _ => null,
        };
        return text is not null && Matches(text);
    }

    /// <summary>Whether one value of the claim matches one of the patterns.</summary>
    public bool Matches(string text) => Patterns.Any(p => IsPattern(p) ? FileSystemName.MatchesSimpleExpression(p, text, ignoreCase: false) : p == text);

    private static bool IsPattern(string p) => p.AsSpan().IndexOfAny('*', '?') >= 0;

    public string Describe() => Patterns.Length == 1
        ? IsPattern(Patterns[0]) ? $"does not match '{Patterns[0]}'" : $"is not '{Patterns[0]}'"
        : $"is none of '{string.Join("', '", Patterns)}'";
}

/// <summary>Reports the mistakes <see cref="TrustedIssuersOptions.Load"/> collected, so that <c>serve</c> stops at start with every one of them.</summary>
internal sealed class TrustedIssuersOptionsValidator : IValidateOptions<TrustedIssuersOptions>
{
    public ValidateOptionsResult Validate(string? name, TrustedIssuersOptions options) =>
        options.Errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(options.Errors);
}
