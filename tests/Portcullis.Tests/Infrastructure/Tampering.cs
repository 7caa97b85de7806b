namespace Portcullis.Tests.Infrastructure;

/// <summary>Credentials altered the way a forger or a typo would alter them.</summary>
public static class Tampering
{
    /// <summary>The credential with its last character changed: the same shape and length, so only its checksum or signature tells.</summary>
    public static string LastCharacterChanged(string credential) => credential[..^1] + (credential[^1] == 'a' ? 'b' : 'a');
}
