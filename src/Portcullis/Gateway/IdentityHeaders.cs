using Portcullis.Auth;

namespace Portcullis.Gateway;

/// <summary>
/// The headers that tell a service who is calling (docs/gateway.md): added by the gateway and by forward-auth,
/// and never believed when a client sends them, in any case and with '_' for '-'.
/// </summary>
internal static class IdentityHeaders
{
    public const string Prefix = "X-Portcullis-";

    public static void Add(Credential credential, Action<string, string> add)
    {
        add("X-Portcullis-User", credential.Owner.Name);
        add("X-Portcullis-Token-Id", credential.TokenId ?? "");
        add("X-Portcullis-Scopes", credential.Effective.ToString());
    }

    /// <summary>Whether a client-sent header pretends to be one of ours.</summary>
    public static bool IsForged(string name)
    {
        if (name.Length <= Prefix.Length)
            return false;
        for (var i = 0; i < Prefix.Length; i++)
        {
            var c = name[i] == '_' ? '-' : char.ToLowerInvariant(name[i]);
            if (c != char.ToLowerInvariant(Prefix[i]))
                return false;
        }
        return true;
    }
}
