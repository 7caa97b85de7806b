using System.Text.RegularExpressions;

namespace Portcullis.Security;

[Flags]
internal enum ScopeFlags : byte
{
    None = 0,
    Api = 1,
    Services = 2,
    Admin = 4,
}

/// <summary>One right a request needs: the management API, one protected service, or admin.</summary>
internal readonly record struct ScopeRequirement(ScopeFlags Flag, string? Service = null)
{
    public static readonly ScopeRequirement Api = new(ScopeFlags.Api);
    public static readonly ScopeRequirement Admin = new(ScopeFlags.Admin);

    public static ScopeRequirement ForService(string name) => new(ScopeFlags.Services, name);

    /// <summary>The scope named in <c>WWW-Authenticate: ... scope="..."</c> when this requirement is not met.</summary>
    public string ScopeName => Flag switch
    {
        ScopeFlags.Api => Scopes.Api,
        ScopeFlags.Admin => Scopes.Admin,
        _ => Service is null ? Scopes.Services : $"{Scopes.Services} {Scopes.ServicePrefix}{Service}",
    };
}

/// <summary>
/// An immutable set of scopes (docs/decisions.md). <c>admin</c> implies everything; <c>services</c> implies every
/// <c>services:NAME</c>. Checks are allocation-free because they run on every request.
/// </summary>
internal sealed partial class ScopeSet : IEquatable<ScopeSet>
{
    public static readonly ScopeSet Empty = new(ScopeFlags.None, []);
    public static readonly ScopeSet ApiAndServices = new(ScopeFlags.Api | ScopeFlags.Services, []);
    public static readonly ScopeSet UserRights = ApiAndServices;
    public static readonly ScopeSet AdminRights = new(ScopeFlags.Api | ScopeFlags.Services | ScopeFlags.Admin, []);

    private readonly string[] _services;

    private ScopeSet(ScopeFlags flags, string[] services)
    {
        Flags = flags;
        // admin and services subsume the per-service entries; keep the set canonical.
        _services = (flags & (ScopeFlags.Admin | ScopeFlags.Services)) != 0 ? [] : services;
    }

    public ScopeFlags Flags { get; }

    public IReadOnlyList<string> Services => _services;

    public bool IsEmpty => Flags == ScopeFlags.None && _services.Length == 0;

    public bool Allows(ScopeRequirement requirement)
    {
        if ((Flags & ScopeFlags.Admin) != 0)
            return true;
        if (requirement.Flag == ScopeFlags.Services && requirement.Service is { } name)
        {
            if ((Flags & ScopeFlags.Services) != 0)
                return true;
            foreach (var s in _services)
            {
                if (string.Equals(s, name, StringComparison.Ordinal))
                    return true;
            }
            return false;
        }
        return (Flags & requirement.Flag) == requirement.Flag;
    }

    /// <summary>True when every right in this set is also in <paramref name="other"/>.</summary>
    public bool IsSubsetOf(ScopeSet other)
    {
        if ((other.Flags & ScopeFlags.Admin) != 0)
            return true;
        if ((Flags & ~other.Flags) != 0)
            return false;
        if ((other.Flags & ScopeFlags.Services) != 0)
            return true;
        return _services.All(s => other.Allows(ScopeRequirement.ForService(s)));
    }

    /// <summary>The rights held by both sets: what a credential may really do for its owner.</summary>
    public ScopeSet Intersect(ScopeSet other)
    {
        if (IsSubsetOf(other))
            return this;
        if (other.IsSubsetOf(this))
            return other;
        var adminBoth = (Flags & other.Flags & ScopeFlags.Admin) != 0;
        if (adminBoth)
            return this;
        // Without admin on both sides, admin on one side means "everything" for the other side's flags.
        var flags = (Flags & ScopeFlags.Admin) != 0 ? other.Flags : (other.Flags & ScopeFlags.Admin) != 0 ? Flags : Flags & other.Flags;
        var services = _services.Concat(other._services).Distinct(StringComparer.Ordinal)
            .Where(s => Allows(ScopeRequirement.ForService(s)) && other.Allows(ScopeRequirement.ForService(s)));
        return new ScopeSet(flags & ~ScopeFlags.Admin, services.Order(StringComparer.Ordinal).ToArray());
    }

    public ScopeSet Union(ScopeSet other) =>
        new(Flags | other.Flags, _services.Union(other._services, StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray());

    public IEnumerable<string> ToNames()
    {
        if ((Flags & ScopeFlags.Api) != 0) yield return Scopes.Api;
        if ((Flags & ScopeFlags.Services) != 0) yield return Scopes.Services;
        foreach (var s in _services) yield return Scopes.ServicePrefix + s;
        if ((Flags & ScopeFlags.Admin) != 0) yield return Scopes.Admin;
    }

    /// <summary>Space-separated form used in storage, OAuth fields and JWT <c>scope</c> claims.</summary>
    public override string ToString() => _text ??= string.Join(' ', ToNames());

    private string? _text;

    public static bool TryParse(IEnumerable<string> names, out ScopeSet scopes, out string? error)
    {
        var flags = ScopeFlags.None;
        var services = new List<string>();
        foreach (var raw in names)
        {
            var name = raw?.Trim() ?? "";
            switch (name)
            {
                case Scopes.Api: flags |= ScopeFlags.Api; break;
                case Scopes.Services: flags |= ScopeFlags.Services; break;
                case Scopes.Admin: flags |= ScopeFlags.Admin; break;
                default:
                    if (name.StartsWith(Scopes.ServicePrefix, StringComparison.Ordinal) && ServiceNameRegex().IsMatch(name[Scopes.ServicePrefix.Length..]))
                    {
                        services.Add(name[Scopes.ServicePrefix.Length..]);
                        break;
                    }
                    scopes = Empty;
                    error = $"Unknown scope '{Truncate(name)}'. Valid scopes are 'api', 'services', 'services:<name>' (name of lowercase letters, digits and '-') and 'admin'.";
                    return false;
            }
        }
        scopes = new ScopeSet(flags, services.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray());
        error = null;
        return true;
    }

    /// <summary>Parses the stored (space-separated) form; storage is trusted, so unknown names are dropped.</summary>
    public static ScopeSet Parse(string? spaceSeparated)
    {
        if (string.IsNullOrWhiteSpace(spaceSeparated))
            return Empty;
        var names = spaceSeparated.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return TryParse(names, out var set, out _) ? set : Empty;
    }

    public static ScopeSet FromFlags(ScopeFlags flags) => new(flags, []);

    public bool Equals(ScopeSet? other) => other is not null && Flags == other.Flags && _services.SequenceEqual(other._services);

    public override bool Equals(object? obj) => Equals(obj as ScopeSet);

    public override int GetHashCode() => HashCode.Combine(Flags, _services.Length);

    private static string Truncate(string s) => s.Length <= 64 ? s : s[..64] + "…";

    [GeneratedRegex("^[a-z0-9-]{1,64}$")]
    private static partial Regex ServiceNameRegex();
}

internal static class Scopes
{
    public const string Api = "api";
    public const string Services = "services";
    public const string Admin = "admin";
    public const string ServicePrefix = "services:";
}
