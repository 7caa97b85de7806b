namespace Portcullis.OAuth;

/// <summary>
/// The public clients that are Portcullis itself (docs/decisions.md, "Every access token names a client"). Every
/// access token carries a <c>client_id</c> (RFC 9068 §2.2): a person's password login is issued to one of these
/// unless it authenticated a registered OAuth client. They have no secret and are never a token's subject, so a
/// token naming one is a person's token, never an OAuth client's own. Registered client ids (<c>client-…</c>)
/// cannot take these names.
/// </summary>
internal static class FirstPartyClients
{
    /// <summary>Password logins at <c>/auth/token</c>.</summary>
    public const string Portcullis = "portcullis";

    /// <summary>CLI logins: <c>/auth/token/cli</c>, and Daeploy's <c>/auth/login</c>.</summary>
    public const string Cli = PortcullisClient.CliClientId;

    public static bool Contains(string? clientId) => clientId is Portcullis or Cli;
}
